"""Fixtures for the control-loop tests: the simulators in-process (zero delay) and a driver that ticks."""

from datetime import timedelta

import pytest
import requests

from lcm import reconcile
from scheduling.scheduler import place_pending
from sessions.models import LabletSession
from sessions.reconcilers import reconcile_session, record_failure, sessions_needing_work
from simulators.runner import start_simulators
from tests.factories import WorkerFactory


@pytest.fixture
def sims(settings):
    handle = start_simulators(cml_port=0, lds_port=0, grading_port=0, zero_delay=True, only=["cml", "lds", "grading"])
    settings.LCM_LDS_BASE_URL = handle.urls["lds"]
    settings.LCM_GRADING_BASE_URL = handle.urls["grading"]
    settings.LCM_HTTP_READ_TIMEOUT = 5.0
    from workers.clients.cml import forget_tokens

    forget_tokens()
    yield handle
    handle.stop()


@pytest.fixture
def sim_worker(sims, settings):
    """A RUNNING CMLWorker backed by a fresh virtual CML in the simulator."""
    created = []

    def make(name="w1", **fields):
        answer = requests.post(f"{sims.urls['cml']}/_sim/workers", json={"name": name}, timeout=5).json()
        settings.LCM_CML_USERNAME = answer["username"]
        settings.LCM_CML_PASSWORD = answer["password"]
        worker = WorkerFactory(name=name, cml_base_url=answer["base_url"], cml_version="2.9.0", **fields)
        created.append(worker)
        return worker

    return make


def drive(until, *, ticks: int = 60):
    """Tick placement and reconcile every session needing work until `until()` holds; returns the tick count."""
    for tick in range(ticks):
        if until():
            return tick
        place_pending(require_leader=False)
        for session_id in sessions_needing_work():
            reconcile.run("lablets", session_id, reconcile_session, record_failure)
    assert until(), "the loops did not reach the expected state"
    return ticks


def status_of(session) -> str:
    return LabletSession.objects.get(pk=session.pk).status


def soon(minutes: int = 5):
    from django.utils import timezone

    return timezone.now() + timedelta(minutes=minutes)
