"""Timeslot rules (SPEC §3.3) and grading outcomes (§3.4) through the reconcilers and the simulators."""

from datetime import timedelta

import pytest
from django.utils import timezone

from grading.models import GradingSession, ScoreReport
from sessions.booking import session_create
from sessions.models import LabletSession
from sessions.services import session_transition
from tests.factories import DefinitionFactory, SessionFactory, WorkerFactory
from tests.support.loops import drive, status_of
from tests.support.simulators import sim_control

pytestmark = pytest.mark.django_db


def _shift_into_past(session, minutes_ago_end=0):
    end = timezone.now() - timedelta(minutes=minutes_ago_end, seconds=1)
    LabletSession.objects.filter(pk=session.pk).update(timeslot_start=end - timedelta(minutes=30), timeslot_end=end)


def test_a_pending_session_that_missed_its_timeslot_expires():
    session = SessionFactory()
    _shift_into_past(session)
    drive(lambda: status_of(session) == "EXPIRED")
    session.refresh_from_db()
    assert session.end_reason == "EXPIRED" and session.cleanup_pending is False


def test_a_scheduled_session_waits_for_its_boot_lead(sims, sim_worker):
    sim_worker("w1")
    definition = DefinitionFactory(boot_lead_minutes=5)
    session = session_create(
        definition=definition, owner="x", timeslot_start=timezone.now() + timedelta(minutes=30), actor="t"
    )
    drive(lambda: status_of(session) == "SCHEDULED", ticks=3)
    assert status_of(session) == "SCHEDULED"  # 30 min away, boot lead 5 min, placement lead 35 min


@pytest.mark.parametrize(("grading", "expected"), [(True, "COLLECTING"), (False, "STOPPING")])
def test_a_running_session_at_its_end_is_collected_or_stopped(grading, expected):
    from sessions.reconcilers import reconcile_session

    session = SessionFactory(
        status="RUNNING", worker=WorkerFactory(), definition=DefinitionFactory(grading_enabled=grading)
    )
    _shift_into_past(session)
    reconcile_session(session.pk)
    session.refresh_from_db()
    assert session.status == expected


def test_a_stuck_grading_session_times_out_and_faults(settings):
    from sessions.reconcilers import reconcile_session

    session = SessionFactory(status="GRADING", worker=WorkerFactory())
    grading = GradingSession.objects.create(lablet_session=session, status="GRADING")
    LabletSession.objects.filter(pk=session.pk).update(status_changed_at=timezone.now() - timedelta(hours=2))
    reconcile_session(session.pk)
    session.refresh_from_db()
    grading.refresh_from_db()
    assert session.status == "EXPIRED" and grading.status == "FAULTED"


def _to_grading(session):
    drive(lambda: status_of(session) == "READY")
    session_transition(session, "RUNNING", actor="t")
    session_transition(session, "COLLECTING", actor="t")


def test_a_grading_failure_still_tears_down_cleanly(sims, sim_worker):
    worker = sim_worker("w1")
    sim_control.post(
        f"{sims.urls['grading']}/_sim/grading/outcomes", json={"outcome": "fail", "reason": "collector down"}, timeout=5
    ).raise_for_status()
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="f", actor="t")
    _to_grading(session)
    drive(lambda: status_of(session) == "ARCHIVED")
    session.refresh_from_db()
    grading = GradingSession.objects.get(lablet_session=session)
    assert grading.status == "FAULTED" and "collector down" in grading.error_message
    assert not ScoreReport.objects.filter(lablet_session=session).exists()
    assert session.grade_result is None
    assert session.lab_record.status == "WIPED"
    from scheduling.selectors import worker_capacities

    assert worker_capacities([worker.pk])[str(worker.pk)].sessions == 0


@pytest.mark.django_db(transaction=True)
def test_the_grading_completion_event_stores_the_report_without_waiting_for_a_tick(
    live_server, sims, sim_worker, settings, monkeypatch
):
    """Grading learns its result from the Grading Engine's CloudEvent (webhook → immediate reconcile)."""
    import time

    from lcm import coordination, projection

    sim_control.put(
        f"{sims.urls['grading']}/_sim/webhook",
        json={"url": f"{live_server.url}/api/events", "secret": settings.WEBHOOK_SECRET},
        timeout=5,
    ).raise_for_status()
    sim_worker("w1")
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="g", actor="t")
    drive(lambda: status_of(session) == "READY")
    # From here no tick runs and no requeue is honoured: only after-commit wake-ups and the webhook move it.
    from lcm import loops

    monkeypatch.setattr(loops, "MAX_INPROCESS_REQUEUE_SECONDS", -1.0)
    settings.LCM_INPROCESS_WORKERS = 2
    monkeypatch.setattr(coordination, "_coordinator", coordination.InProcessCoordinator())
    projection.connect()
    try:
        session_transition(session, "RUNNING", actor="t")
        session_transition(session, "COLLECTING", actor="t")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not ScoreReport.objects.filter(lablet_session=session).exists():
            time.sleep(0.1)
    finally:
        projection.disconnect()
    assert ScoreReport.objects.filter(lablet_session=session).exists(), status_of(session)
    from lcm.models import ReceivedEvent

    assert ReceivedEvent.objects.filter(event_type__startswith="io.lablet.grading.").exists()
    drive(lambda: status_of(session) == "ARCHIVED")
