"""The simulators started in this process (on free ports), and virtual CML servers inside the CML simulator.

Simulators served by `start_simulators` demand their control token in `X-Sim-Token` (SPEC §12): the tests
start them with `SIM_TOKEN` (`running_simulators` does) and drive their `/_sim/...` API through `sim_control`,
a requests session that sends it.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import requests

from simulators.runner import start_simulators

SIM_TOKEN = "tests-simulator-control-token"
CONTROL_HEADERS = {"X-Sim-Token": SIM_TOKEN}

sim_control = requests.Session()
sim_control.headers.update(CONTROL_HEADERS)


@contextmanager
def running_simulators(**options) -> Iterator:
    """`start_simulators(**options)` (with the tests' control token, every port free unless named) for the duration;
    yields its handle."""
    # Every port free unless a test names one: a fixed default port (8101-8105) could be held by anything else.
    free = {f"{name}_port": 0 for name in ("cml", "lds", "grading", "moto", "oidc")}
    handle = start_simulators(**({"control_token": SIM_TOKEN} | free | options))
    try:
        yield handle
    finally:
        handle.stop()


def virtual_cml(cml_url: str, name: str) -> dict:
    """A new virtual CML in the simulator at `cml_url`: its `base_url`, `username` and `password`."""
    return sim_control.post(f"{cml_url}/_sim/workers", json={"name": name}, timeout=5).json()
