"""The benchmark rigs behind the `bench_*` management commands (SPEC §6.3), one module each, and what they
share (`packing`: mixes, lower bound, peer policies; `fixtures`: database fixtures, etcd, percentiles).

Each command file declares its arguments and calls its rig's `run(options)`; the rig writes through the
command (stdout, stderr, `--json`) and records changes under the command's actor.
"""


class BenchRun:
    """One run of a `bench_*` command: output goes through the command, history rows name its actor."""

    def __init__(self, command):
        self.command = command
        self.stdout, self.stderr = command.stdout, command.stderr
        self.actor = getattr(command, "actor", "")

    def write_json(self, data) -> None:
        self.command.write_json(data)
