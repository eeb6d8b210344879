"""Session services: reservation rules (SPEC §3.1), side effects of transitions (§2.2), extend, requeue."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from grading.models import GradingSession
from lcm.errors import Conflict
from lcm.events import status_changed
from lcm.fsm import InvalidTransition
from sessions.booking import session_create, session_extend
from sessions.models import LabletSession, SessionStatusChange, UserSession
from sessions.services import session_cleanup_finished, session_requeue, session_terminate, session_transition
from tests.factories import DefinitionFactory, SessionFactory, UserSessionFactory, WorkerFactory

pytestmark = pytest.mark.django_db


def _errors(excinfo) -> dict:
    return excinfo.value.message_dict


# --- reservation rules --------------------------------------------------------------------


def test_create_asap_defaults_start_to_now_and_end_to_max_duration():
    definition = DefinitionFactory(max_duration_minutes=45)
    before = timezone.now()
    session = session_create(definition=definition, owner="alice", actor="tester")
    assert session.status == "PENDING"
    assert before <= session.timeslot_start <= timezone.now()
    assert session.timeslot_end - session.timeslot_start == timedelta(minutes=45)
    assert session.definition_version == definition.version
    row = SessionStatusChange.objects.get(session=session)
    assert (row.from_status, row.to_status, row.actor) == ("", "PENDING", "tester")


def test_create_accepts_a_definition_id_and_iso_strings():
    definition = DefinitionFactory()
    start = timezone.now() + timedelta(hours=1)
    session = session_create(
        definition=str(definition.pk),
        owner="bob",
        timeslot_start=start.isoformat(),
        timeslot_end=(start + timedelta(minutes=30)).isoformat(),
        actor="tester",
    )
    assert session.timeslot_end - session.timeslot_start == timedelta(minutes=30)


@pytest.mark.parametrize("status", ["INACTIVE", "DEPRECATED", "ARCHIVED"])
def test_definition_must_be_active(status):
    definition = DefinitionFactory(status=status)
    with pytest.raises(ValidationError) as excinfo:
        session_create(definition=definition, owner="x", actor="t")
    assert "definition_id" in _errors(excinfo)
    assert not LabletSession.objects.exists()


def test_unknown_definition_is_a_field_error():
    with pytest.raises(ValidationError) as excinfo:
        session_create(definition="not-a-uuid", owner="x", actor="t")
    assert "definition_id" in _errors(excinfo)


def test_end_must_be_after_start():
    definition = DefinitionFactory()
    start = timezone.now() + timedelta(hours=1)
    for end in (start, start - timedelta(minutes=1)):
        with pytest.raises(ValidationError) as excinfo:
            session_create(definition=definition, owner="x", timeslot_start=start, timeslot_end=end, actor="t")
        assert "timeslot_end" in _errors(excinfo)
    assert not LabletSession.objects.exists()


def test_start_must_not_be_in_the_past():
    definition = DefinitionFactory()
    with pytest.raises(ValidationError) as excinfo:
        session_create(definition=definition, owner="x", timeslot_start=timezone.now() - timedelta(hours=1), actor="t")
    assert _errors(excinfo)["timeslot_start"] == ["is in the past"]


def test_duration_must_not_exceed_the_definition_maximum():
    definition = DefinitionFactory(max_duration_minutes=60)
    start = timezone.now() + timedelta(minutes=5)
    with pytest.raises(ValidationError) as excinfo:
        session_create(
            definition=definition,
            owner="x",
            timeslot_start=start,
            timeslot_end=start + timedelta(minutes=61),
            actor="t",
        )
    assert "at most 60" in _errors(excinfo)["timeslot_end"][0]
    ok = session_create(
        definition=definition, owner="x", timeslot_start=start, timeslot_end=start + timedelta(minutes=60), actor="t"
    )
    assert ok.status == "PENDING"


def test_naive_and_malformed_times_are_field_errors():
    definition = DefinitionFactory()
    with pytest.raises(ValidationError) as excinfo:
        session_create(definition=definition, owner="x", timeslot_start="2030-01-01T10:00:00", actor="t")
    assert "timezone" in _errors(excinfo)["timeslot_start"][0]
    with pytest.raises(ValidationError) as excinfo:
        session_create(definition=definition, owner="x", timeslot_start="tomorrow", actor="t")
    assert "ISO 8601" in _errors(excinfo)["timeslot_start"][0]
    with pytest.raises(ValidationError) as excinfo:
        session_create(definition=definition, owner="x", timeslot_start="2030-02-30T10:00:00Z", actor="t")
    assert "ISO 8601" in _errors(excinfo)["timeslot_start"][0]


def test_owner_is_required():
    with pytest.raises(ValidationError) as excinfo:
        session_create(definition=DefinitionFactory(), owner="  ", actor="t")
    assert _errors(excinfo)["owner"] == ["is required"]


def test_duplicate_reservation_id_is_a_conflict_naming_the_existing_session():
    definition = DefinitionFactory()
    first = session_create(definition=definition, owner="x", reservation_id="R-1", actor="t")
    with pytest.raises(Conflict) as excinfo:
        session_create(definition=definition, owner="y", reservation_id="R-1", actor="t")
    assert excinfo.value.existing_id == str(first.pk)
    assert str(first.pk) in excinfo.value.detail
    assert LabletSession.objects.count() == 1


# --- transition side effects -------------------------------------------------------------


def test_scheduled_sets_worker_and_refuses_without_one():
    session = SessionFactory()
    with pytest.raises(InvalidTransition, match="needs a worker"):
        session_transition(session, "SCHEDULED", actor="t")
    worker = WorkerFactory()
    moved = session_transition(session, "SCHEDULED", actor="scheduler", worker=worker)
    assert moved.worker == worker
    assert moved.scheduled_at is not None


def test_scheduled_refuses_a_worker_that_is_not_running_or_is_full():
    session = SessionFactory()
    with pytest.raises(InvalidTransition, match="not RUNNING"):
        session_transition(session, "SCHEDULED", actor="t", worker=WorkerFactory(status="STOPPED"))
    small = WorkerFactory(cpu_cores=1)
    with pytest.raises(InvalidTransition, match="not enough cpu"):
        session_transition(session, "SCHEDULED", actor="t", worker=small)
    session.refresh_from_db()
    assert session.status == "PENDING" and session.worker is None


def test_requeue_from_scheduled_clears_the_placement():
    worker = WorkerFactory()
    session = SessionFactory(status="SCHEDULED", worker=worker, allocated_ports={"a": 2000})
    moved = session_requeue(session, actor="t", reason="worker drained")
    assert moved.status == "PENDING"
    assert moved.worker is None and moved.allocated_ports == {}


def test_requeue_of_another_active_state_nudges_without_a_transition():
    session = SessionFactory(status="INSTANTIATING", worker=WorkerFactory(), attempts=3, last_error="boom")
    moved = session_requeue(session, actor="t")
    assert moved.status == "INSTANTIATING"
    assert (moved.attempts, moved.last_error, moved.next_attempt_at) == (0, "", None)
    with pytest.raises(InvalidTransition):
        session_requeue(SessionFactory(status="ARCHIVED"), actor="t")


def test_ready_requires_a_user_session_created_in_the_same_step():
    session = SessionFactory(status="INSTANTIATING", worker=WorkerFactory())
    with pytest.raises(InvalidTransition, match="UserSession"):
        session_transition(session, "READY", actor="t")
    assert not UserSession.objects.exists()
    moved = session_transition(
        session, "READY", actor="t", user_session={"lds_session_id": "L1", "login_url": "https://lds.test/l"}
    )
    assert moved.status == "READY"
    assert moved.user_session.lds_session_id == "L1"
    entities = list(SessionStatusChange.objects.filter(session=session).values_list("entity", "to_status"))
    assert entities == [("user_session", "PROVISIONING"), ("session", "READY")]


def test_ready_accepts_an_existing_user_session():
    user_session = UserSessionFactory(lablet_session__status="INSTANTIATING")
    moved = session_transition(user_session.lablet_session, "READY", actor="t")
    assert moved.status == "READY"


def test_running_sets_started_at_and_stopped_sets_duration():
    session = SessionFactory(status="READY", worker=WorkerFactory())
    running = session_transition(session, "RUNNING", actor="t")
    assert running.started_at is not None
    stopping = session_transition(session, "STOPPING", actor="t")
    assert stopping.end_reason == "COMPLETED"
    stopped = session_transition(session, "STOPPED", actor="t")
    assert stopped.ended_at >= stopped.started_at
    assert stopped.duration_seconds == int((stopped.ended_at - stopped.started_at).total_seconds())


def test_grading_creates_the_grading_session_in_the_same_step():
    session = SessionFactory(status="COLLECTING", worker=WorkerFactory())
    moved = session_transition(session, "GRADING", actor="instructor", reason="Start Grading")
    grading = GradingSession.objects.get(lablet_session=session)
    assert moved.grading_session == grading
    assert grading.status == "PENDING"


def test_terminate_sets_end_reason_and_cleanup_flag():
    worker = WorkerFactory()
    session = SessionFactory(status="RUNNING", worker=worker)
    moved = session_terminate(session, actor="admin", reason="candidate left")
    assert moved.status == "TERMINATED"
    assert moved.end_reason == "TERMINATED" and moved.end_reason_detail == "candidate left"
    assert moved.cleanup_pending is True
    done = session_cleanup_finished(session, actor="reconciler")
    assert done.cleanup_pending is False


def test_terminate_of_a_pending_session_needs_no_cleanup():
    moved = session_terminate(SessionFactory(), actor="t")
    assert moved.cleanup_pending is False


def test_terminate_twice_is_refused():
    session = SessionFactory()
    session_terminate(session, actor="t")
    with pytest.raises(InvalidTransition):
        session_terminate(session, actor="t")


def test_expired_sets_end_reason():
    session = SessionFactory(status="READY", worker=WorkerFactory())
    moved = session_transition(session, "EXPIRED", actor="lablet-reconciler", reason="timeslot ended")
    assert moved.end_reason == "EXPIRED" and moved.cleanup_pending


def test_expected_status_makes_a_move_conditional():
    session = SessionFactory(status="READY", worker=WorkerFactory())
    with pytest.raises(InvalidTransition, match="not RUNNING"):
        session_transition(session, "COLLECTING", actor="t", expected_status="RUNNING")
    session.refresh_from_db()
    assert session.status == "READY"


def test_change_is_announced_only_after_commit(django_capture_on_commit_callbacks):
    seen = []

    def listener(sender, **kwargs):
        seen.append((sender, kwargs["from_status"], kwargs["to_status"]))

    status_changed.connect(listener)
    try:
        session = SessionFactory()
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            session_terminate(session, actor="t")
        assert seen == []
        for callback in callbacks:
            callback()
        assert seen == [("session", "PENDING", "TERMINATED")]
    finally:
        status_changed.disconnect(listener)


def test_a_failing_listener_does_not_undo_the_change(django_capture_on_commit_callbacks):
    def broken(sender, **kwargs):
        raise RuntimeError("listener down")

    status_changed.connect(broken)
    try:
        session = SessionFactory()
        with django_capture_on_commit_callbacks(execute=True):
            session_terminate(session, actor="t")
        session.refresh_from_db()
        assert session.status == "TERMINATED"
    finally:
        status_changed.disconnect(broken)


# --- extend ------------------------------------------------------------------------------


def test_extend_moves_the_end_within_the_maximum():
    definition = DefinitionFactory(max_duration_minutes=90)
    session = SessionFactory(definition=definition)
    new_end = session.timeslot_start + timedelta(minutes=90)
    moved = session_extend(session, new_end, actor="instructor")
    assert moved.timeslot_end == new_end
    row = SessionStatusChange.objects.get(session=session)
    assert "timeslot_end" in row.reason


def test_extend_refuses_earlier_ends_and_overlong_slots_unless_admin():
    definition = DefinitionFactory(max_duration_minutes=60)
    session = SessionFactory(definition=definition)
    with pytest.raises(ValidationError, match="later than"):
        session_extend(session, session.timeslot_end - timedelta(minutes=1), actor="t")
    too_long = session.timeslot_start + timedelta(minutes=120)
    with pytest.raises(ValidationError, match="at most 90"):  # 60 + max_extension_minutes (30)
        session_extend(session, too_long, actor="t")
    with pytest.raises(ValidationError, match="needs a reason"):
        session_extend(session, too_long, actor="admin", is_admin=True)
    assert session_extend(session, too_long, actor="admin", is_admin=True, reason="x").timeslot_end == too_long


def test_extend_refused_on_finished_sessions():
    session = SessionFactory(status="STOPPED")
    with pytest.raises(InvalidTransition):
        session_extend(session, session.timeslot_end + timedelta(minutes=5), actor="t")
