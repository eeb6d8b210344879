"""Sessions driven by the real loops (placement + lablet + grading reconcilers) against the simulators."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from grading.models import ScoreReport
from lcm import http, loops, reconcile
from scheduling.scheduler import place_pending
from scheduling.selectors import worker_capacities
from sessions.booking import session_create
from sessions.clients.lds import LDSClient
from sessions.models import LabletSession
from sessions.reconcilers import reconcile_session, record_failure
from sessions.services import session_terminate, session_transition
from tests.factories import DefinitionFactory
from tests.support.loops import drive, status_of
from tests.support.simulators import sim_control
from workers.clients.cml import CMLClient, cml_client_for
from workers.models import LabRecord, Port

pytestmark = pytest.mark.django_db


def _cml_labs(sims, worker):
    state = sim_control.get(f"{sims.urls['cml']}/_sim/workers/{worker.name}", timeout=5).json()
    return state.get("labs", state)


def _lds_state(sims):
    return sim_control.get(f"{sims.urls['lds']}/_sim/state", timeout=5).json()


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
    # Started by hand, finished by hand: a normal end, not an LDS fault (SPEC §3.4).
    assert session.user_session.status == "ENDED"
    assert not session.cleanup_pending


def _archived_session(definition):
    """A session of `definition` run to ARCHIVED without grading: its lab is left WIPED for reuse."""
    session = session_create(definition=definition, owner="a", actor="t")
    drive(lambda: status_of(session) == "READY")
    session_transition(session, "RUNNING", actor="t")
    session_transition(session, "STOPPING", actor="t")
    drive(lambda: status_of(session) == "ARCHIVED")
    session.refresh_from_db()
    return session


def test_a_wiped_lab_is_reused_by_the_next_session(sims, sim_worker):
    sim_worker("w1")
    definition = DefinitionFactory(boot_lead_minutes=30, grading_enabled=False)
    first = _archived_session(definition)
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
    sim_control.post(
        f"{sims.urls['cml']}/_sim/faults", json={"operation": "start_lab", "status": 500, "times": None}, timeout=5
    ).raise_for_status()
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="e", actor="t")
    drive(lambda: status_of(session) == "TERMINATED" and not LabletSession.objects.get(pk=session.pk).cleanup_pending)
    session.refresh_from_db()
    assert session.end_reason == "FAILED"
    assert session.lab_record.status == "DELETED"
    assert not Port.objects.filter(lab_record=session.lab_record).exists()


def test_scheduled_to_ready_is_two_passes_run_back_to_back_in_a_bounded_number_of_statements(sims, sim_worker):
    """A handler does not fall through into the next state's: the SCHEDULED pass moves the session to
    INSTANTIATING (making its lab record and ports in that move) and asks for a pass at once; the runner runs
    it in the same call (no round trip through the queue), and it records devices and launch URL with READY."""
    sim_worker("w1")
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="q", actor="t")
    place_pending(require_leader=False)
    assert status_of(session) == "SCHEDULED"
    first = reconcile.run("lablets", session.pk, reconcile_session, record_failure)
    assert (first.action, first.requeue_after, status_of(session)) == ("instantiating", 0, "INSTANTIATING")
    session_transition(LabletSession.objects.get(pk=session.pk), "TERMINATED", actor="t")
    drive(lambda: not LabRecord.objects.filter(active_session=session).exists())

    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="q", actor="t")
    place_pending(require_leader=False)
    with CaptureQueriesContext(connection) as queries:
        result = loops.reconcile_key("lablets", session.pk)
    assert status_of(session) == "READY" and result.action == "ready"
    assert len(queries) <= 38, "\n".join(q["sql"][:100] for q in queries.captured_queries)
    session.refresh_from_db()
    assert session.cml_lab_id == session.lab_record.cml_lab_id != ""
    assert session.allocated_ports == session.lab_record.ports and len(session.allocated_ports) == 3
    assert session.user_session.status == "PROVISIONED" and session.user_session.login_url
    steps = [(h.entity, h.to_status) for h in session.history.all()]
    assert steps[-4:] == [
        ("session", "INSTANTIATING"),
        ("user_session", "PROVISIONING"),
        ("user_session", "PROVISIONED"),
        ("session", "READY"),
    ]


# Each external step of instantiation, failing once: before it takes effect, or after (its answer lost,
# as when the process dies right after the call). An LDS session whose creation answer is lost cannot be
# found again (the LDS API has no lookup by our reference), so that case is only failed before the call.
_STEPS = [
    (CMLClient, "import_lab", False),
    (CMLClient, "import_lab", True),
    (CMLClient, "start_lab", True),
    (CMLClient, "check_converged", False),
    (LDSClient, "create_session", False),
    (LDSClient, "set_devices", True),
    (LDSClient, "launch_url", True),
]


@pytest.mark.parametrize(("client", "method", "took_effect"), _STEPS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_a_pass_failing_at_any_step_is_finished_by_the_next_without_duplicates(
    sims, sim_worker, monkeypatch, client, method, took_effect
):
    import sessions.reconcilers as reconcilers

    monkeypatch.setattr(reconcilers, "backoff", lambda attempts: timedelta(0))
    worker = sim_worker("w1")
    real, failed = getattr(client, method), []

    def once(self, *args, **kwargs):
        if failed:
            return real(self, *args, **kwargs)
        failed.append(method)
        if took_effect:
            real(self, *args, **kwargs)
        raise http.Unavailable("test", method, "connection lost")

    monkeypatch.setattr(client, method, once)
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="f", actor="t")
    drive(lambda: status_of(session) == "READY")
    assert failed == [method]
    session.refresh_from_db()
    assert session.attempts == 0 and session.last_error == ""
    lab = session.lab_record
    assert lab.status == "BOOTED" and session.cml_lab_id == lab.cml_lab_id
    assert LabRecord.objects.count() == 1 and Port.objects.filter(lab_record=lab).count() == 3
    assert [lab_id for lab_id in _cml_labs(sims, worker)] == [lab.cml_lab_id]
    assert session.user_sessions.count() == 1
    assert session.user_session.login_url and len(session.user_session.devices) == 2


@pytest.mark.parametrize("method", ["start_lab", "check_converged"])
def test_a_pass_that_died_after_starting_a_reused_lab_carries_on_with_it(sims, sim_worker, monkeypatch, method):
    """The reused (wiped) lab is started in CML before its record says so: a pass lost right after the start
    leaves a WIPED record whose lab is STARTED. The next pass knows it is its own lab and carries on."""
    import sessions.reconcilers as reconcilers

    monkeypatch.setattr(reconcilers, "backoff", lambda attempts: timedelta(0))
    worker = sim_worker("w1")
    definition = DefinitionFactory(boot_lead_minutes=30, grading_enabled=False)
    first = _archived_session(definition)
    real, failed = getattr(CMLClient, method), []

    def once(self, *args, **kwargs):
        answer = real(self, *args, **kwargs)  # it took effect in CML ...
        if not failed:
            failed.append(method)
            raise http.Unavailable("test", method, "connection lost")  # ... but the pass never learnt it
        return answer

    monkeypatch.setattr(CMLClient, method, once)
    second = session_create(definition=definition, owner="g", actor="t")
    drive(lambda: status_of(second) == "READY")
    second.refresh_from_db()
    assert failed == [method] and second.lab_record_id == first.lab_record_id
    assert second.lab_record.status == "BOOTED" and LabRecord.objects.count() == 1
    assert not LabRecord.objects.filter(status="ERROR").exists()
    assert [lab_id for lab_id in _cml_labs(sims, worker)] == [second.lab_record.cml_lab_id]


def test_a_wiped_lab_gone_from_cml_is_not_reused(sims, sim_worker):
    worker = sim_worker("w1")
    definition = DefinitionFactory(boot_lead_minutes=30, grading_enabled=False)
    wiped = _archived_session(definition).lab_record
    assert wiped.status == "WIPED"
    cml_client_for(worker).delete_lab(wiped.cml_lab_id)  # removed behind LCM's back
    second = session_create(definition=definition, owner="b", actor="t")
    drive(lambda: status_of(second) == "READY")
    second.refresh_from_db()
    wiped.refresh_from_db()
    assert second.lab_record_id != wiped.pk and second.lab_record.status == "BOOTED"
    assert wiped.status == "DELETED" and wiped.active_session_id is None
    assert not Port.objects.filter(lab_record=wiped).exists()
    assert list(_cml_labs(sims, worker)) == [second.lab_record.cml_lab_id]
