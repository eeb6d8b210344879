"""The lablet reconciler (`sessions/reconcilers.py`), one status handler at a time, through `reconcile_session`.

The loop tests (tests/loops) drive whole lifecycles against the simulators, which covers instantiation (a lab
imported, started and converged, an LDS session provisioned) and the lab teardown in CML. Here each handler's
own decisions are pinned down on a session in that status: the move it makes (actor `lablet-reconciler`,
its reason) and the `Result` it returns. None of these passes needs an external system. The steps of a
session whose worker went away are in tests/workers/test_worker_reconciler.py.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions.models import LabletSession
from sessions.reconcilers import ACTOR, reconcile_session
from tests.factories import DefinitionFactory, SessionFactory, UserSessionFactory, WorkerFactory

pytestmark = pytest.mark.django_db


def ended(session, minutes_ago: int = 0) -> None:
    """Move the session's timeslot into the past (ended `minutes_ago` minutes and a second ago)."""
    end = timezone.now() - timedelta(minutes=minutes_ago, seconds=1)
    LabletSession.objects.filter(pk=session.pk).update(timeslot_start=end - timedelta(minutes=30), timeslot_end=end)


def last_move(session) -> tuple[str, str, str, str]:
    change = session.history.filter(entity="session").order_by("at", "id").last()
    return (change.from_status, change.to_status, change.actor, change.reason)


def reloaded(session) -> LabletSession:
    return LabletSession.objects.get(pk=session.pk)


def session_on_a_worker(status: str, **fields) -> LabletSession:
    return SessionFactory(status=status, worker=WorkerFactory(status="RUNNING"), **fields)


def test_the_actor_is_the_lablet_reconciler():
    assert ACTOR == "lablet-reconciler"


# --- PENDING ------------------------------------------------------------------------------------


def test_pending_waits_for_placement_and_expires_once_its_timeslot_ended():
    session = SessionFactory()

    waiting = reconcile_session(session.pk)

    assert (waiting.action, waiting.requeue_after) == ("waiting for placement", None)
    assert reloaded(session).status == "PENDING" and not session.history.exists()

    ended(session)
    expired = reconcile_session(session.pk)

    session = reloaded(session)
    assert (session.status, session.end_reason) == ("EXPIRED", "EXPIRED")
    assert last_move(session) == ("PENDING", "EXPIRED", ACTOR, "the timeslot ended before the session ran")
    assert (expired.action, expired.requeue_after) == ("expired", 0)


# --- SCHEDULED ----------------------------------------------------------------------------------


def test_scheduled_waits_for_its_boot_lead():
    start = timezone.now() + timedelta(minutes=30)
    session = session_on_a_worker("SCHEDULED", definition=DefinitionFactory(boot_lead_minutes=5), timeslot_start=start)

    result = reconcile_session(session.pk)

    assert reloaded(session).status == "SCHEDULED" and not session.history.exists()
    assert result.action == "waiting for boot lead"
    assert 24 * 60 < result.requeue_after <= 25 * 60


@pytest.mark.parametrize("worker_status", ["DRAINING", "STOPPING", "STOPPED"])
def test_scheduled_on_a_worker_no_longer_running_goes_back_to_pending(worker_status):
    session = SessionFactory(status="SCHEDULED", worker=WorkerFactory(status=worker_status))

    result = reconcile_session(session.pk)

    session = reloaded(session)
    assert session.status == "PENDING" and session.worker is None
    assert last_move(session) == ("SCHEDULED", "PENDING", ACTOR, "worker no longer RUNNING before instantiation")
    assert (result.action, result.requeue_after) == ("requeued", None)


def test_scheduled_past_its_timeslot_expires():
    session = session_on_a_worker("SCHEDULED")
    ended(session)

    result = reconcile_session(session.pk)

    assert last_move(reloaded(session)) == ("SCHEDULED", "EXPIRED", ACTOR, "the timeslot ended before the session ran")
    assert (result.action, result.requeue_after) == ("expired", 0)


# --- INSTANTIATING ------------------------------------------------------------------------------


def test_instantiating_past_its_timeslot_expires_before_touching_cml():
    session = session_on_a_worker("INSTANTIATING")
    ended(session)

    result = reconcile_session(session.pk)  # the worker's CML is not even reachable: it is never called

    session = reloaded(session)
    assert (session.status, session.end_reason) == ("EXPIRED", "EXPIRED")
    assert last_move(session) == ("INSTANTIATING", "EXPIRED", ACTOR, "the timeslot ended before the session ran")
    assert (result.action, result.requeue_after) == ("expired", 0)


# --- READY --------------------------------------------------------------------------------------


def test_ready_waits_for_the_candidate_until_the_end_of_its_timeslot():
    session = session_on_a_worker("READY", timeslot_start=timezone.now() - timedelta(minutes=5))

    result = reconcile_session(session.pk)

    assert reloaded(session).status == "READY" and not session.history.exists()
    assert result.action == "waiting for the candidate"
    assert 54 * 60 < result.requeue_after <= 55 * 60  # until the end of the 60-minute slot


def test_ready_never_started_expires_at_the_end_of_its_timeslot():
    session = session_on_a_worker("READY")
    ended(session)

    result = reconcile_session(session.pk)

    session = reloaded(session)
    assert (session.status, session.end_reason) == ("EXPIRED", "EXPIRED")
    assert last_move(session) == ("READY", "EXPIRED", ACTOR, "the candidate never started")
    assert (result.action, result.requeue_after) == ("expired", 0)


# --- RUNNING ------------------------------------------------------------------------------------


def test_running_before_its_end_waits_until_then():
    session = session_on_a_worker("RUNNING", timeslot_start=timezone.now() - timedelta(minutes=30))

    result = reconcile_session(session.pk)

    assert reloaded(session).status == "RUNNING" and not session.history.exists()
    assert result.action == "running" and 29 * 60 < result.requeue_after <= 30 * 60


@pytest.mark.parametrize(("grading", "target"), [(True, "COLLECTING"), (False, "STOPPING")])
def test_running_at_its_end_is_collected_or_stopped_with_its_reason(grading, target):
    session = session_on_a_worker("RUNNING", definition=DefinitionFactory(grading_enabled=grading))
    ended(session)

    result = reconcile_session(session.pk)

    assert last_move(reloaded(session)) == ("RUNNING", target, ACTOR, "time is up")
    assert (result.action, result.requeue_after) == ("time is up", 0)


# --- COLLECTING ---------------------------------------------------------------------------------


def test_collecting_moves_on_to_grading():
    session = session_on_a_worker("COLLECTING", definition=DefinitionFactory(grading_enabled=True))

    result = reconcile_session(session.pk)

    session = reloaded(session)
    assert last_move(session) == ("COLLECTING", "GRADING", ACTOR, "collected; grading")
    assert session.grading_sessions.count() == 1  # made with the move
    assert (result.action, result.requeue_after) == ("grading", 0)


def test_collecting_for_a_definition_that_does_not_grade_stops():
    session = session_on_a_worker("COLLECTING", definition=DefinitionFactory(grading_enabled=False))

    result = reconcile_session(session.pk)

    assert last_move(reloaded(session)) == ("COLLECTING", "STOPPING", ACTOR, "the definition does not grade")
    assert (result.action, result.requeue_after) == ("skip grading", 0)


def test_collecting_for_longer_than_the_grading_timeout_expires():
    session = session_on_a_worker("COLLECTING")
    LabletSession.objects.filter(pk=session.pk).update(status_changed_at=timezone.now() - timedelta(days=1))

    result = reconcile_session(session.pk)

    session = reloaded(session)
    assert (session.status, session.end_reason) == ("EXPIRED", "EXPIRED")
    assert last_move(session) == ("COLLECTING", "EXPIRED", ACTOR, "grading timed out while collecting")
    assert (result.action, result.requeue_after) == ("expired", 0)


# --- STOPPING / STOPPED -------------------------------------------------------------------------


def test_stopping_with_nothing_left_on_the_worker_releases_the_user_session_and_stops():
    session = session_on_a_worker("STOPPING")
    user_session = UserSessionFactory(lablet_session=session, lds_session_id="", status="PROVISIONED")

    result = reconcile_session(session.pk)

    assert last_move(reloaded(session)) == ("STOPPING", "STOPPED", ACTOR, "lab stopped and wiped, LDS released")
    assert (result.action, result.requeue_after) == ("stopped", 0)
    user_session.refresh_from_db()
    assert (user_session.status, user_session.error_message) == ("FAULTED", "released before use")


def test_stopped_is_archived():
    session = session_on_a_worker("STOPPED")

    result = reconcile_session(session.pk)

    assert last_move(reloaded(session)) == ("STOPPED", "ARCHIVED", ACTOR, "archived")
    assert (result.action, result.requeue_after) == ("archived", None)


# --- EXPIRED ------------------------------------------------------------------------------------


def test_expired_holding_a_user_session_tears_down_through_stopping():
    session = session_on_a_worker("EXPIRED", end_reason="EXPIRED", cleanup_pending=True)
    UserSessionFactory(lablet_session=session, status="PROVISIONED")

    result = reconcile_session(session.pk)

    assert last_move(reloaded(session)) == ("EXPIRED", "STOPPING", ACTOR, "expired: tearing down")
    assert (result.action, result.requeue_after) == ("tearing down", 0)


def test_expired_holding_nothing_finishes_its_cleanup():
    session = session_on_a_worker("EXPIRED", end_reason="EXPIRED", cleanup_pending=True)

    result = reconcile_session(session.pk)

    session = reloaded(session)
    assert (session.status, session.cleanup_pending) == ("EXPIRED", False)
    assert (result.action, result.requeue_after) == ("expired and clean", None)


# --- TERMINATED ---------------------------------------------------------------------------------


def test_terminated_without_cleanup_pending_has_nothing_to_do():
    session = session_on_a_worker("TERMINATED", end_reason="TERMINATED", cleanup_pending=False)

    result = reconcile_session(session.pk)

    assert reloaded(session).status == "TERMINATED" and not session.history.exists()
    assert (result.action, result.requeue_after) == ("nothing to clean", None)


def test_terminated_with_cleanup_pending_releases_and_finishes_the_cleanup():
    session = session_on_a_worker("TERMINATED", end_reason="FAILED", cleanup_pending=True)
    user_session = UserSessionFactory(lablet_session=session, lds_session_id="", status="PROVISIONED")

    result = reconcile_session(session.pk)

    session = reloaded(session)
    assert (session.status, session.end_reason, session.cleanup_pending) == ("TERMINATED", "FAILED", False)
    assert (result.action, result.requeue_after) == ("cleaned up", None)
    user_session.refresh_from_db()
    assert user_session.status == "FAULTED"


def test_a_session_gone_from_the_database_is_done():
    assert reconcile_session("00000000-0000-4000-8000-000000000000").action == "gone"
