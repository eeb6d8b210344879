"""Sessions driven by the real loops (placement + lablet + grading reconcilers) against the simulators."""

from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from grading.models import ScoreReport
from scheduling.selectors import worker_capacities
from sessions.models import LabletSession
from sessions.services import session_create, session_terminate, session_transition
from tests.factories import DefinitionFactory
from tests.loops.conftest import drive, status_of
from workers.models import LabRecord, Port

pytestmark = pytest.mark.django_db


def _cml_labs(sims, worker):
    state = requests.get(f"{sims.urls['cml']}/_sim/workers/{worker.name}", timeout=5).json()
    return state.get("labs", state)


def _lds_state(sims):
    return requests.get(f"{sims.urls['lds']}/_sim/state", timeout=5).json()


def test_a_session_reaches_ready_then_runs_through_grading_to_archived(sims, sim_worker):
    worker = sim_worker("w1")
    definition = DefinitionFactory(boot_lead_minutes=30)
    session = session_create(definition=definition, owner="alice@example.com", actor="test")

    drive(lambda: status_of(session) == "READY")
    session.refresh_from_db()
    assert session.worker == worker
    assert sorted(session.allocated_ports) == ["edge-router_serial", "workstation_serial", "workstation_vnc"]
    assert len(set(session.allocated_ports.values())) == 3
    user_session = session.user_session
    assert user_session.login_url.startswith("http")
    assert {d["label"] for d in user_session.devices} == {"edge-router", "workstation"}
    assert next(d for d in user_session.devices if d["label"] == "workstation")["protocol"] == "vnc"
    lab = session.lab_record
    assert lab.status == "BOOTED" and lab.cml_lab_id

    session_transition(session, "RUNNING", actor="instructor", reason="Start Session")
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: status_of(session) == "ARCHIVED")

    session.refresh_from_db()
    report = ScoreReport.objects.get(lablet_session=session)
    assert session.grade_result in ("PASS", "FAIL")
    assert report.sections.exists()
    lab.refresh_from_db()
    assert lab.status == "WIPED" and lab.active_session is None
    # Nothing is left running or held by the session.
    assert worker_capacities([worker.pk])[str(worker.pk)].sessions == 0
    assert session.user_session.status in ("ENDED", "FAULTED")


def test_a_wiped_lab_is_reused_by_the_next_session(sims, sim_worker):
    sim_worker("w1")
    definition = DefinitionFactory(boot_lead_minutes=30, grading_enabled=False)
    first = session_create(definition=definition, owner="a", actor="t")
    drive(lambda: status_of(first) == "READY")
    session_transition(first, "RUNNING", actor="t")
    session_transition(first, "STOPPING", actor="t")
    drive(lambda: status_of(first) == "ARCHIVED")
    second = session_create(definition=definition, owner="b", actor="t")
    drive(lambda: status_of(second) == "READY")
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.lab_record_id == first.lab_record_id
    assert LabRecord.objects.count() == 1


def test_terminate_during_instantiation_cleans_everything(sims, sim_worker):
    worker = sim_worker("w1")
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="c", actor="t")
    drive(lambda: status_of(session) == "READY")
    session_terminate(session, actor="admin", reason="cancelled")
    drive(lambda: not LabletSession.objects.get(pk=session.pk).cleanup_pending)
    session.refresh_from_db()
    assert session.status == "TERMINATED"
    assert session.lab_record.status == "WIPED"
    assert worker_capacities([worker.pk])[str(worker.pk)].sessions == 0
    assert session.user_session.status == "FAULTED"


def test_a_ready_session_never_started_expires_and_is_torn_down(sims, sim_worker):
    sim_worker("w1")
    definition = DefinitionFactory(boot_lead_minutes=30)
    session = session_create(definition=definition, owner="d", actor="t")
    drive(lambda: status_of(session) == "READY")
    past = timezone.now() - timedelta(seconds=1)
    LabletSession.objects.filter(pk=session.pk).update(timeslot_start=past - timedelta(minutes=30), timeslot_end=past)
    drive(lambda: status_of(session) == "ARCHIVED")
    session.refresh_from_db()
    assert session.end_reason == "EXPIRED"
    assert [h.to_status for h in session.history.filter(entity="session")][-4:] == [
        "EXPIRED",
        "STOPPING",
        "STOPPED",
        "ARCHIVED",
    ]


def test_repeated_failures_terminate_as_failed_and_delete_the_lab(sims, sim_worker, settings, monkeypatch):
    import sessions.reconcilers as reconcilers

    settings.LCM_MAX_RECONCILE_ATTEMPTS = 3
    monkeypatch.setattr(reconcilers, "backoff", lambda attempts: timedelta(0))
    sim_worker("w1")
    requests.post(
        f"{sims.urls['cml']}/_sim/faults", json={"operation": "start_lab", "status": 500, "times": None}, timeout=5
    ).raise_for_status()
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="e", actor="t")
    drive(lambda: status_of(session) == "TERMINATED" and not LabletSession.objects.get(pk=session.pk).cleanup_pending)
    session.refresh_from_db()
    assert session.end_reason == "FAILED"
    assert session.lab_record.status == "DELETED"
    assert not Port.objects.filter(lab_record=session.lab_record).exists()
