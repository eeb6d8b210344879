"""The simulators started in this process (on free ports), and virtual CML servers inside the CML simulator."""

from collections.abc import Iterator
from contextlib import contextmanager

import requests

from simulators.runner import start_simulators


@contextmanager
def running_simulators(**options) -> Iterator:
    """`start_simulators(**options)` for the duration; yields its handle (`.urls`)."""
    handle = start_simulators(**options)
    try:
        yield handle
    finally:
        handle.stop()


def virtual_cml(cml_url: str, name: str) -> dict:
    """A new virtual CML in the simulator at `cml_url`: its `base_url`, `username` and `password`."""
    return requests.post(f"{cml_url}/_sim/workers", json={"name": name}, timeout=5).json()
