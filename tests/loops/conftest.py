"""Fixtures for the control-loop tests: the simulators in-process (zero delay) and a driver that ticks
(`tests.support.loops`)."""

import pytest

from lcm import coordination, projection
from lcm.loops import InProcessLoops
from tests.factories import WorkerFactory
from tests.support.simulators import running_simulators, virtual_cml
from workers.clients.cml import forget_tokens


@pytest.fixture
def sims(settings):
    with running_simulators(
        cml_port=0, lds_port=0, grading_port=0, zero_delay=True, only=["cml", "lds", "grading"]
    ) as handle:
        settings.LCM_LDS_BASE_URL = handle.urls["lds"]
        settings.LCM_GRADING_BASE_URL = handle.urls["grading"]
        settings.LCM_HTTP_READ_TIMEOUT = 5.0
        forget_tokens()
        yield handle


@pytest.fixture
def sim_worker(sims, settings):
    """A RUNNING CMLWorker backed by a fresh virtual CML in the simulator."""
    created = []

    def make(name="w1", **fields):
        answer = virtual_cml(sims.urls["cml"], name)
        settings.LCM_CML_USERNAME = answer["username"]
        settings.LCM_CML_PASSWORD = answer["password"]
        worker = WorkerFactory(name=name, cml_base_url=answer["base_url"], cml_version="2.9.0", **fields)
        created.append(worker)
        return worker

    return make


@pytest.fixture
def live_loops(settings, monkeypatch):
    """The embedded default's loop runner (ticks + after-commit wake-ups + the in-process pool), ticking fast;
    stopped with its pool idle."""
    settings.LCM_INPROCESS_WORKERS = 2
    settings.LCM_LOOP_PLACEMENT_SECONDS = 0.2
    settings.LCM_LOOP_LABLETS_SECONDS = 0.2
    monkeypatch.setattr(coordination, "_coordinator", coordination.InProcessCoordinator())
    projection.connect()
    runner = InProcessLoops().start()
    yield runner
    projection.disconnect()
    assert runner.stop(timeout=30), "the in-process pool did not go idle"
