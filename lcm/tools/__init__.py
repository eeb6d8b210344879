"""Tooling, not product: the native process launcher (`stack`, `launcher`, `processes`) and the benchmark
rigs behind the `bench_*` commands (`bench`). Tooling may import any app; product modules do not import
tooling (only the `bench_*` command wrappers and the launcher's own entry points do)."""
