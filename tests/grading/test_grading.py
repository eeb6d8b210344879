"""Child state machines (UserSession, GradingSession) and score reports."""

import pytest
from django.core.exceptions import ValidationError

from grading.models import GradingSession, ScoreReport
from grading.services import grading_session_update, score_report_create
from grading.states import GRADING_TRANSITIONS
from lcm.fsm import InvalidTransition
from sessions.models import SessionStatusChange, UserSession
from sessions.services import user_session_update
from sessions.states import USER_SESSION_TRANSITIONS
from tests.factories import GradingSessionFactory, SessionFactory, UserSessionFactory

pytestmark = pytest.mark.django_db


def test_user_session_table_is_the_spec_table():
    spec = {
        "PROVISIONING": {"PROVISIONED", "FAULTED"},
        "PROVISIONED": {"ACTIVE", "FAULTED"},
        "ACTIVE": {"PAUSED", "ENDED", "EXPIRED", "FAULTED"},
        "PAUSED": {"ACTIVE", "ENDED", "EXPIRED", "FAULTED"},
        "ENDED": set(),
        "EXPIRED": set(),
        "FAULTED": set(),
    }
    assert {k: set(v) for k, v in USER_SESSION_TRANSITIONS.items()} == spec
    declared = {(t.source, t.target) for t in UserSession._meta.get_field("status").get_all_transitions(UserSession)}
    assert declared == {(s, t) for s, targets in spec.items() for t in targets}


def test_grading_is_forward_only_and_any_non_terminal_may_fault():
    order = ["PENDING", "COLLECTING", "GRADING", "REVIEWING", "SUBMITTED"]
    for i, state in enumerate(order):
        expected = set(order[i + 1 :]) | ({"FAULTED"} if state != "SUBMITTED" else set())
        assert GRADING_TRANSITIONS[state] == expected
    assert GRADING_TRANSITIONS["FAULTED"] == set()
    declared = {
        (t.source, t.target) for t in GradingSession._meta.get_field("status").get_all_transitions(GradingSession)
    }
    assert declared == {(s, t) for s, targets in GRADING_TRANSITIONS.items() for t in targets}


@pytest.mark.parametrize(
    ("source", "target", "ok"),
    [
        ("PROVISIONED", "ACTIVE", True),
        ("ACTIVE", "PAUSED", True),
        ("PAUSED", "ENDED", True),
        ("ENDED", "ACTIVE", False),
    ],
)
def test_user_session_moves_sampled(source, target, ok):
    user_session = UserSessionFactory(status=source)
    if ok:
        updated = user_session_update(user_session, status=target, actor="lds-webhook", reason="event")
        assert updated.status == target
        row = SessionStatusChange.objects.get(session=user_session.lablet_session, entity="user_session")
        assert (row.from_status, row.to_status, row.actor) == (source, target, "lds-webhook")
    else:
        with pytest.raises(InvalidTransition):
            user_session_update(user_session, status=target, actor="t")
        user_session.refresh_from_db()
        assert user_session.status == source


def test_grading_session_moves_and_refusals():
    grading = GradingSessionFactory()
    grading_session_update(grading, status="GRADING", grading_session_id="GE-1", actor="grading-reconciler")
    grading.refresh_from_db()
    assert (grading.status, grading.grading_session_id) == ("GRADING", "GE-1")
    with pytest.raises(InvalidTransition):
        grading_session_update(grading, status="COLLECTING", actor="t")
    grading_session_update(grading, status="FAULTED", error_message="engine down", actor="t")
    with pytest.raises(InvalidTransition):
        grading_session_update(grading, status="SUBMITTED", actor="t")


def test_score_report_sets_grade_result_and_is_immutable():
    session = SessionFactory(status="GRADING")
    grading = GradingSessionFactory(lablet_session=session)
    report = score_report_create(
        session,
        actor="grading-reconciler",
        score="72.5",
        max_score=100,
        cut_score=70,
        grading_session=grading,
        sections=[
            {"name": "Routing", "score": 40, "max_score": 50, "weight": 1},
            {"name": "Security", "score": 32.5, "max_score": 50, "passed": False},
        ],
    )
    assert report.passed is True
    assert [s.name for s in report.sections.all()] == ["Routing", "Security"]
    session.refresh_from_db()
    assert session.grade_result == "PASS"
    with pytest.raises(ValueError, match="immutable"):
        report.save()

    failing = score_report_create(SessionFactory(), actor="t", score=10, max_score=100, cut_score=70)
    assert failing.passed is False
    assert failing.lablet_session.grade_result == "FAIL"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"score": "abc"}, "score"),
        ({"score": 120}, "score"),
        ({"max_score": 0}, "max_score"),
        ({"cut_score": 200}, "cut_score"),
        ({"sections": [{"score": 1, "max_score": 2}]}, "sections[0].name"),
        ({"sections": "nope"}, "sections"),
    ],
)
def test_bad_score_reports_name_the_field_and_store_nothing(kwargs, field):
    session = SessionFactory()
    data = {"score": 50, "max_score": 100, "cut_score": 70} | kwargs
    with pytest.raises(ValidationError) as excinfo:
        score_report_create(session, actor="t", **data)
    assert field in excinfo.value.message_dict
    assert not ScoreReport.objects.exists()
    session.refresh_from_db()
    assert session.grade_result is None
