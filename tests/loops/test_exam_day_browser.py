"""An instructor's exam day in a real browser with the control loops running (SPEC §3.4, §3.4a, §5.4): extra
time that reaches the candidate, the candidate link that is copied and never opened, grading that starts by
itself or waits for an instructor, and a lab held for review. Chromium through Playwright, the in-process
loops (ticks + after-commit wake-ups + the pool) and the simulators."""

import time
from datetime import timedelta

import pytest

from grading.models import GradingSession
from sessions.booking import session_create
from sessions.candidate import lds_end_of
from sessions.clients.lds import lds_client
from sessions.models import LabletSession
from sessions.services import session_transition
from tests.factories import DefinitionFactory
from tests.support.browser import button
from tests.support.loops import status_of as db_status
from tests.support.simulators import sim_control
from tests.support.waiting import poll

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _ready(definition):
    session = session_create(definition=definition, owner="cand@example.com", actor="t")
    assert poll(lambda: db_status(session) == "READY", timeout=30), db_status(session)
    return LabletSession.objects.get(pk=session.pk)


def _lds_end(session):
    user_session = LabletSession.objects.get(pk=session.pk).user_session
    return lds_end_of(lds_client().get_session(user_session.lds_session_id))


def test_ten_more_minutes_from_the_page_reach_the_candidate_in_lds(open_page, instructor, sim_worker, live_loops):
    sim_worker("w1")
    session = _ready(DefinitionFactory(boot_lead_minutes=30, grading_mode="none"))
    session = session_transition(session, "RUNNING", actor="instructor", reason="Start Session")
    old_end = session.timeslot_end
    page = open_page(instructor, f"/sessions/{session.pk}/")
    page.on("dialog", lambda dialog: dialog.accept())  # Finish and Archive ask first (issue 19)
    assert "min left" in page.locator("#time-left").inner_text()

    button(page, "+10 min").click()
    page.locator(".toast-success").filter(has_text="Timeslot extended").wait_for()
    session.refresh_from_db()
    assert (session.timeslot_end - old_end).total_seconds() == 600 and session.status == "RUNNING"
    assert poll(lambda: abs((_lds_end(session) - session.timeslot_end).total_seconds()) < 60, timeout=10)
    assert poll(lambda: "LDS end moved to" in page.content(), timeout=10)  # the history says so, live

    too_late = session.timeslot_start + timedelta(minutes=session.definition.max_duration_minutes + 60)
    page.locator("#session-actions input[name=timeslot_end]").fill(too_late.strftime("%Y-%m-%dT%H:%M"))
    button(page, "Extend").click()
    error = page.locator("#session-actions .field-error").first
    error.wait_for()
    assert "instructors may extend to at most" in error.inner_text()  # inline, naming the limit


def test_copying_the_candidate_link_never_starts_the_clock(open_page, instructor, sim_worker, live_loops):
    sim_worker("w1")
    session = _ready(DefinitionFactory(boot_lead_minutes=30))
    page = open_page(instructor, f"/sessions/{session.pk}/")
    page.on("dialog", lambda dialog: dialog.accept())  # Finish and Archive ask first (issue 19)
    assert page.get_by_role("link", name="Open Lab").count() == 0
    page.get_by_role("button", name="Copy candidate link").click()
    page.locator(".toast").filter(has_text="Candidate link copied").wait_for()
    assert page.get_by_role("link", name="Monitor").count() == 1
    time.sleep(1.0)  # the loops keep running meanwhile
    assert db_status(session) == "READY"
    assert LabletSession.objects.get(pk=session.pk).user_session.status == "PROVISIONED"


def test_manual_grading_waits_for_start_grading_with_a_visible_reason(open_page, instructor, sim_worker, live_loops):
    sim_worker("w1")
    session = _ready(DefinitionFactory(boot_lead_minutes=30, grading_mode="manual"))
    session_transition(session, "RUNNING", actor="instructor", reason="Start Session")
    page = open_page(instructor, f"/sessions/{session.pk}/")
    page.on("dialog", lambda dialog: dialog.accept())  # Finish and Archive ask first (issue 19)
    button(page, "Finish Session").click()
    page.locator('[data-status="COLLECTING"]').wait_for()
    page.locator("#waiting-for").filter(has_text="Waiting for an instructor").wait_for()
    time.sleep(1.5)  # several ticks: it stays where it is
    assert db_status(session) == "COLLECTING"
    assert not GradingSession.objects.filter(lablet_session=session).exists()

    button(page, "Start Grading").click()
    page.locator('[data-status="ARCHIVED"]').wait_for(timeout=20_000)
    assert LabletSession.objects.get(pk=session.pk).grade_result in ("PASS", "FAIL")


def test_auto_grading_never_shows_grading_buttons(open_page, instructor, sims, sim_worker, live_loops):
    sim_worker("w1")
    # The engine holds the grading until told to finish, so the page is seen while the session grades.
    sim_control.post(f"{sims.urls['grading']}/_sim/grading/outcomes", json={"outcome": "hang"}, timeout=5)
    session = _ready(DefinitionFactory(boot_lead_minutes=30, grading_mode="auto"))
    session_transition(session, "RUNNING", actor="instructor", reason="Start Session")
    page = open_page(instructor, f"/sessions/{session.pk}/")
    page.on("dialog", lambda dialog: dialog.accept())  # Finish and Archive ask first (issue 19)
    button(page, "Finish Session").click()
    page.locator('[data-status="GRADING"]').wait_for(timeout=20_000)  # moved on by the loop, nobody pressed
    assert poll(
        lambda: GradingSession.objects.exclude(grading_session_id="").filter(lablet_session=session).exists(),
        timeout=10,
    )
    html = page.content()
    assert "Start Grading" not in html and "Skip Grading" not in html
    assert button(page, "Complete Grading").count() == 1 and "Waiting for an instructor" not in html

    engine_id = GradingSession.objects.get(lablet_session=session).grading_session_id
    sim_control.post(f"{sims.urls['grading']}/_sim/grading/{engine_id}/complete", json={"score": 80}, timeout=5)
    page.locator('[data-status="ARCHIVED"]').wait_for(timeout=20_000)
    assert "Start Grading" not in page.content()


def test_a_held_lab_shows_archive_and_archive_works(open_page, instructor, sim_worker, live_loops):
    sim_worker("w1")
    session = _ready(DefinitionFactory(boot_lead_minutes=30, grading_mode="auto", hold_for_review_hours=1))
    session_transition(session, "RUNNING", actor="instructor", reason="Start Session")
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    assert poll(lambda: db_status(session) == "STOPPED", timeout=20), db_status(session)
    page = open_page(instructor, f"/sessions/{session.pk}/")
    page.on("dialog", lambda dialog: dialog.accept())  # Finish and Archive ask first (issue 19)
    page.locator("#waiting-for").filter(has_text="Lab kept for review").wait_for()
    assert LabletSession.objects.get(pk=session.pk).lab_record.status == "STOPPED"

    button(page, "Archive").click()
    page.locator('[data-status="ARCHIVED"]').wait_for(timeout=20_000)
    assert LabletSession.objects.get(pk=session.pk).lab_record.status == "WIPED"
