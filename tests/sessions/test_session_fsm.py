"""The LabletSession state machine: the full 12 × 12 matrix through the service, plus its history rows."""

import itertools

import pytest
from django_fsm import TransitionNotAllowed

from lcm.fsm import InvalidTransition
from sessions.models import LabletSession, SessionStatusChange
from sessions.services import session_transition
from sessions.states import SESSION_TRANSITIONS, SessionStatus
from tests.factories import SessionFactory, WorkerFactory

STATES = SessionStatus.values

# The table of SPEC §2.2, written out independently of states.py so a typo there is caught.
SPEC_TABLE = {
    "PENDING": {"SCHEDULED", "EXPIRED", "TERMINATED"},
    "SCHEDULED": {"INSTANTIATING", "PENDING", "EXPIRED", "TERMINATED"},
    "INSTANTIATING": {"READY", "EXPIRED", "TERMINATED"},
    "READY": {"RUNNING", "EXPIRED", "TERMINATED"},
    "RUNNING": {"COLLECTING", "STOPPING", "EXPIRED", "TERMINATED"},
    "COLLECTING": {"GRADING", "STOPPING", "EXPIRED", "TERMINATED"},
    "GRADING": {"STOPPING", "EXPIRED", "TERMINATED"},
    "STOPPING": {"STOPPED", "TERMINATED"},
    "STOPPED": {"ARCHIVED", "TERMINATED"},
    "ARCHIVED": {"TERMINATED"},
    "EXPIRED": {"STOPPING", "TERMINATED"},
    "TERMINATED": set(),
}


def test_declared_table_is_the_spec_table():
    assert {k: set(v) for k, v in SESSION_TRANSITIONS.items()} == SPEC_TABLE
    assert len(STATES) == 12


def test_fsm_methods_match_the_table():
    """The django-fsm transitions generated on the model allow exactly the table's moves."""
    declared = set()
    for transition in LabletSession._meta.get_field("status").get_all_transitions(LabletSession):
        declared.add((transition.source, transition.target))
    expected = {(src, dst) for src, targets in SPEC_TABLE.items() for dst in targets}
    assert declared == expected


def test_status_is_protected():
    session = LabletSession(status="PENDING")
    with pytest.raises(AttributeError):
        session.status = "RUNNING"


def test_model_refuses_a_move_outside_the_table():
    session = LabletSession(status="PENDING")
    with pytest.raises(TransitionNotAllowed):
        session.to_running()


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), list(itertools.product(STATES, STATES)))
def test_transition_matrix(source, target):
    worker = WorkerFactory()
    # Sessions past SCHEDULED sit on a worker, as they would in real life.
    on_worker = source not in ("PENDING",)
    session = SessionFactory(status=source, worker=worker if on_worker else None)
    params = {"worker": worker, "user_session": {"lds_session_id": "lds-1", "login_url": "https://lds.test/x"}}
    allowed = target in SPEC_TABLE[source]

    if allowed:
        moved = session_transition(session, target, actor="matrix-test", reason=f"{source}->{target}", **params)
        assert moved.status == target
        session.refresh_from_db()
        assert session.status == target
        rows = list(SessionStatusChange.objects.filter(session=session, entity="session"))
        assert len(rows) == 1
        assert (rows[0].from_status, rows[0].to_status) == (source, target)
        assert rows[0].actor == "matrix-test"
        assert rows[0].reason == f"{source}->{target}"
    else:
        with pytest.raises(InvalidTransition) as excinfo:
            session_transition(session, target, actor="matrix-test", reason="refused", **params)
        assert excinfo.value.current == source
        assert excinfo.value.allowed == sorted(SPEC_TABLE[source])
        session.refresh_from_db()
        assert session.status == source
        assert not SessionStatusChange.objects.filter(session=session).exists()


@pytest.mark.django_db
def test_statuses_are_accepted_case_insensitively():
    session = SessionFactory(status="READY")
    moved = session_transition(session, "expired", actor="t")
    assert moved.status == "EXPIRED"


@pytest.mark.django_db
def test_unknown_status_is_a_value_error_and_changes_nothing():
    session = SessionFactory()
    with pytest.raises(ValueError, match="unknown status"):
        session_transition(session, "FLYING", actor="t")
    session.refresh_from_db()
    assert session.status == "PENDING"
