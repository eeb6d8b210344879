"""The grading reconciler (`grading/reconcilers.py`): a GRADING session's step, through `reconcile_session` (the
lablet reconciler calls `on_session_grading`, registered by the grading app, which runs `reconcile_grading`).

Against the Grading Engine simulator in this process (zero delay). The grading timeout is pinned down in
tests/loops/test_timeslots_grading.py (a stuck grading faults and the session expires).
"""

import pytest

from grading.models import GradingSession, ScoreReport
from grading.reconcilers import ACTOR, POLL_SECONDS
from sessions.models import LabletSession
from sessions.reconcilers import reconcile_session
from sessions.services import session_transition
from tests.factories import ScoreReportFactory, SessionFactory, UserSessionFactory, WorkerFactory
from tests.support.simulators import running_simulators, sim_control

pytestmark = pytest.mark.django_db

DEVICES = [{"label": "r1", "protocol": "ssh", "host": "10.0.0.1", "port": 2001}]


@pytest.fixture(scope="module")
def engine_url():
    with running_simulators(grading_port=0, zero_delay=True, only=["grading"]) as handle:
        yield handle.urls["grading"]


@pytest.fixture
def engine(engine_url, settings):
    sim_control.post(f"{engine_url}/_sim/reset", timeout=10).raise_for_status()
    settings.LCM_GRADING_BASE_URL = engine_url
    settings.LCM_HTTP_READ_TIMEOUT = 5.0
    return engine_url


def grading_session_of(*, with_user_session: bool = True) -> LabletSession:
    """A session that has just entered GRADING (its GradingSession made with the move)."""
    session = SessionFactory(status="COLLECTING", worker=WorkerFactory())
    if with_user_session:
        UserSessionFactory(lablet_session=session, devices=DEVICES)
    session_transition(session, "GRADING", actor="test")
    return LabletSession.objects.get(pk=session.pk)


def last_move(session) -> tuple[str, str, str, str]:
    change = session.history.filter(entity="session").order_by("at", "id").last()
    return (change.from_status, change.to_status, change.actor, change.reason)


def reloaded(session) -> LabletSession:
    return LabletSession.objects.get(pk=session.pk)


def test_a_grading_pass_asks_the_engine_then_stores_the_report_and_stops(engine):
    sim_control.post(f"{engine}/_sim/grading/outcomes", json={"outcome": "complete", "score": 3}, timeout=5)
    session = grading_session_of()
    grading = GradingSession.objects.get(lablet_session=session)

    asked = reconcile_session(session.pk)

    grading.refresh_from_db()
    assert (asked.action, asked.requeue_after) == ("grading requested", POLL_SECONDS)
    assert grading.status == "GRADING" and grading.grading_session_id == str(grading.pk)
    assert grading.grading_part_id == session.definition.form_qualified_name
    assert reloaded(session).status == "GRADING"

    graded = reconcile_session(session.pk)

    grading.refresh_from_db()
    report = ScoreReport.objects.get(lablet_session=session)
    assert report.grading_session == grading and report.score == 3
    assert grading.status == "SUBMITTED"
    _, to, actor, reason = last_move(reloaded(session))
    assert (to, actor) == ("STOPPING", ACTOR) and reason == f"score 3/{int(report.max_score)} stored"
    assert (graded.action, graded.requeue_after) == ("graded", 0)


def test_a_faulted_engine_grading_faults_the_grading_and_stops_without_a_score(engine):
    sim_control.post(f"{engine}/_sim/grading/outcomes", json={"outcome": "fail", "reason": "collector down"}, timeout=5)
    session = grading_session_of()

    reconcile_session(session.pk)
    result = reconcile_session(session.pk)

    grading = GradingSession.objects.get(lablet_session=session)
    assert grading.status == "FAULTED" and "collector down" in grading.error_message
    assert not ScoreReport.objects.filter(lablet_session=session).exists()
    _, to, actor, reason = last_move(reloaded(session))
    assert (to, actor) == ("STOPPING", ACTOR)
    assert reason.startswith("grading faulted: ") and reason.endswith("; tearing down without a score")
    assert (result.action, result.requeue_after) == ("graded", 0)


def test_a_grading_already_faulted_stops_without_asking_the_engine(settings):
    settings.LCM_GRADING_BASE_URL = "http://127.0.0.1:9"  # nothing answers: the pass must not call it
    session = grading_session_of()
    GradingSession.objects.filter(lablet_session=session).update(status="FAULTED", error_message="by hand")

    result = reconcile_session(session.pk)

    assert last_move(reloaded(session)) == (
        "GRADING",
        "STOPPING",
        ACTOR,
        "grading faulted: by hand; tearing down without a score",
    )
    assert (result.action, result.requeue_after) == ("graded", 0)


def test_a_report_already_stored_stops_without_asking_the_engine(settings):
    settings.LCM_GRADING_BASE_URL = "http://127.0.0.1:9"
    session = grading_session_of()
    grading = GradingSession.objects.get(lablet_session=session)
    ScoreReportFactory(lablet_session=session, grading_session=grading)

    result = reconcile_session(session.pk)

    assert last_move(reloaded(session)) == ("GRADING", "STOPPING", ACTOR, "score report stored")
    assert (result.action, result.requeue_after) == ("graded", 0)


def test_a_missing_grading_session_is_recreated_and_graded(engine):
    session = SessionFactory(status="GRADING", worker=WorkerFactory())  # made by hand, without its GradingSession
    UserSessionFactory(lablet_session=session, devices=DEVICES)

    result = reconcile_session(session.pk)

    grading = GradingSession.objects.get(lablet_session=session)
    assert grading.status == "GRADING"
    assert session.history.filter(entity="grading_session", reason="missing grading session recreated").exists()
    assert (result.action, result.requeue_after) == ("grading requested", POLL_SECONDS)


def test_a_create_whose_answer_was_lost_is_not_made_twice(engine):
    session = grading_session_of()
    grading = GradingSession.objects.get(lablet_session=session)
    first = reconcile_session(session.pk)
    assert first.action == "grading requested"
    # The pass's record of the create is lost: the next pass creates again, the engine refuses the id it has.
    GradingSession.objects.filter(pk=grading.pk).update(grading_session_id="", status="PENDING")

    again = reconcile_session(session.pk)

    grading.refresh_from_db()
    assert again.action == "grading requested" and grading.grading_session_id == str(grading.pk)
    sessions = sim_control.get(f"{engine}/_sim/state", timeout=5).json()["sessions"]
    assert len(sessions) == 1


def _graded(engine, score: int) -> ScoreReport:
    sim_control.post(f"{engine}/_sim/grading/outcomes", json={"outcome": "complete", "score": score}, timeout=5)
    session = grading_session_of()
    reconcile_session(session.pk)
    reconcile_session(session.pk)
    return ScoreReport.objects.get(lablet_session=session)


def test_the_pass_mark_is_the_engines_cut_score(engine):
    from grading.clients.grading_engine import grading_client

    grading_client().set_scoring_requirements("Exam-Demo-1.0", cut_score=55, min_score=0, reread_score=50)
    report = _graded(engine, 60)
    assert (report.score, report.max_score, report.cut_score, report.passed) == (60, 100, 55, True)
    # The engine's contract has no section cut scores: sections get no verdict of their own.
    assert [s.passed for s in report.sections.all()] == [None, None]


def test_sections_pass_or_fail_when_the_engine_sends_their_cut_scores():
    from grading.clients.grading_engine import part_score

    part = {"scoreReport": {"score": 60, "maxScore": 100, "sections": [
        {"id": "1", "score": 60, "maxScore": 60, "cutScore": 42},
        {"id": "2", "score": 0, "maxScore": 40, "cutScore": 28},
        {"id": "3", "score": 5, "maxScore": 5},
    ]}}  # fmt: skip
    sections = part_score(part).sections
    assert [(s.id, s.cut_score) for s in sections] == [("1", 42), ("2", 28), ("3", None)]


def test_without_an_engine_cut_score_the_definitions_pass_percent_then_the_default_decides(engine):
    from workers.models import SystemSettings

    sim_control.delete(f"{engine}/_sim/toolkits/Exam-Demo-1.0/scoring", timeout=5).raise_for_status()
    SystemSettings.objects.update_or_create(pk=1, defaults={"pass_percent": 65})
    report = _graded(engine, 60)
    assert (report.cut_score, report.passed) == (65, False)  # the system default: 65 % of 100

    session = report.lablet_session
    session.definition.pass_percent = 50
    session.definition.save()
    sim_control.post(f"{engine}/_sim/grading/outcomes", json={"outcome": "complete", "score": 60}, timeout=5)
    again = SessionFactory(status="COLLECTING", worker=WorkerFactory(), definition=session.definition)
    UserSessionFactory(lablet_session=again, devices=DEVICES)
    session_transition(again, "GRADING", actor="test")
    reconcile_session(again.pk)
    reconcile_session(again.pk)
    report = ScoreReport.objects.get(lablet_session=again)
    assert (report.cut_score, report.passed) == (50, True)  # the definition's 50 %
