"""The instructor's main flows in a real browser: Playwright (sync API) driving Debian's Chromium
against the live server (SPEC §5.3, §5.4, §6.1). Screenshots of every page go to
`test-artifacts/screenshots/` (not committed)."""

import csv
import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from grading.models import ScoreReport
from sessions.models import LabletSession
from sessions.services import session_transition
from tests.pages.conftest import SCREENSHOTS, make_session
from tests.support.browser import button, status_of
from workers.models import CMLWorker

TABLET = {"width": 820, "height": 1180}

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The Extend form's buttons: a quick +5/+10/+15 minutes, or Extend to the end typed in (SPEC §3.4a).
EXTEND = ["+5 min", "+10 min", "+15 min", "Extend"]
BUTTONS = {
    "READY": ["Start Session", "Terminate", *EXTEND],
    "RUNNING": ["Finish Session", "Terminate", *EXTEND],
    "COLLECTING": ["Start Grading", "Skip Grading"],
    "GRADING": ["Complete Grading", "Terminate"],
    "STOPPED": ["Archive"],
    "PENDING": ["Terminate", *EXTEND],
    "SCHEDULED": ["Terminate", *EXTEND, "Requeue"],
    "INSTANTIATING": ["Terminate", *EXTEND],
}


def shot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def mark_no_reload(page):
    """A window variable survives every htmx swap and disappears on any navigation or reload."""
    page.wait_for_function("window.htmx !== undefined")
    page.evaluate("window.__lcmNoReload = 'still here'")


def assert_no_reload(page):
    assert page.evaluate("window.__lcmNoReload") == "still here"


def test_log_in_and_screenshot_every_page(open_page, admin_user, instructor, fleet):
    from playwright.sync_api import expect

    page = open_page(None, "/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    shot(page, "01-login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("enter a correct username and password")
    page.get_by_label("Password").fill("admin-pass")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.locator(".usermenu")).to_contain_text("admin")
    shot(page, "02-dashboard")

    sessions, worker, definition = fleet["sessions"], fleet["worker"], fleet["definition"]
    pages = [
        ("03-sessions", "/sessions/"),
        ("04-session-new-form", "/sessions/?new=1"),
        ("05-session-pending", f"/sessions/{sessions['PENDING'].pk}/"),
        ("06-session-instantiating", f"/sessions/{sessions['INSTANTIATING'].pk}/"),
        ("07-session-running", f"/sessions/{sessions['RUNNING'].pk}/"),
        ("08-session-grading", f"/sessions/{sessions['GRADING'].pk}/"),
        ("09-session-archived", f"/sessions/{sessions['ARCHIVED'].pk}/"),
        ("10-workers", "/workers/"),
        ("11-worker-detail", f"/workers/{worker.pk}/"),
        ("12-definitions", "/definitions/"),
        ("13-definition-detail", f"/definitions/{definition.pk}/"),
        ("14-definition-upload", "/definitions/new/"),
        ("16-reports", "/reports/"),
        ("17-scheduler-preview", f"/scheduler/?definition={definition.pk}"),
        ("18-settings", "/settings/"),
        ("19-sessions-bad-filters", "/sessions/?status=FLYING&date=2026-02-30&worker=nope"),
    ]
    for name, path in pages:
        response = page.goto(path)
        assert response.status == 200, path
        expect(page.locator("main h1")).to_be_visible()
        shot(page, name)
    page.goto("/definitions/new/")
    page.get_by_role("button", name="Create definition").click()
    expect(page.locator(".field-error").first).to_be_visible()
    shot(page, "15-definition-upload-errors")
    page.goto("/reports/")
    page.locator("details.sections summary").first.click()
    shot(page, "16-reports-sections")

    for name, path in [
        ("20-tablet-dashboard", "/"),
        ("21-tablet-session-running", f"/sessions/{sessions['RUNNING'].pk}/"),
        ("22-tablet-workers", "/workers/"),
        ("23-tablet-sessions", "/sessions/"),
    ]:
        tablet = open_page(admin_user, path, viewport=TABLET)
        # Nothing wider than the screen: tables scroll inside their cards instead.
        assert tablet.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
        shot(tablet, name)

    denied = open_page(instructor, "/settings/")
    expect(denied.get_by_role("heading", name="Not allowed")).to_be_visible()
    shot(denied, "24-instructor-403")


def test_create_a_session_from_the_form_and_see_field_errors(open_page, instructor, fleet):
    from playwright.sync_api import expect

    page = open_page(instructor, "/sessions/")
    page.get_by_text("New session", exact=True).click()
    form = page.locator("#new-session")
    form.get_by_label("Definition", exact=True).select_option(label="ccna-lab 1.0.0")
    form.get_by_label("At a set time").check()
    form.get_by_label("Reservation id").fill("RES-42")
    form.get_by_role("button", name="Book session").click()
    expect(page.locator("#id_owner-error")).to_contain_text("required")
    expect(page.locator("#id_timeslot_start-error")).to_contain_text("start time")
    # The input is kept.
    expect(form.get_by_label("Definition", exact=True)).to_have_value(str(fleet["definition"].pk))
    expect(form.get_by_label("Reservation id")).to_have_value("RES-42")
    expect(form.get_by_label("At a set time")).to_be_checked()
    shot(page, "30-new-session-errors")

    form.get_by_label("Owner").fill("erin")
    form.get_by_label("As soon as possible").check()
    form.get_by_role("button", name="Book session").click()
    expect(page).to_have_url(re.compile(r"/sessions/[0-9a-f-]{36}/$"))
    expect(status_of(page)).to_have_attribute("data-status", "PENDING")
    expect(page.get_by_role("heading", name="Session of erin")).to_be_visible()
    expect(page.locator("#toasts")).to_contain_text("Booked a session for erin")
    session = LabletSession.objects.get(reservation_id="RES-42")
    assert (session.owner, session.status, session.created_by) == ("erin", "PENDING", "instructor")


def test_each_state_shows_exactly_the_buttons_of_the_table(open_page, admin_user, fleet):
    page = open_page(admin_user, "/sessions/")
    for status, session in fleet["sessions"].items():
        page.goto(f"/sessions/{session.pk}/")
        assert status_of(page).get_attribute("data-status") == status
        labels = [b.strip() for b in page.locator("#session-actions button").all_inner_texts()]
        assert labels == BUTTONS.get(status, []), status


def test_buttons_move_the_state_without_a_reload(open_page, admin_user, fleet):
    from playwright.sync_api import expect

    definition, worker = fleet["definition"], fleet["worker"]
    session = make_session("READY", definition=definition, worker=worker, owner="frank")
    page = open_page(admin_user, f"/sessions/{session.pk}/")
    mark_no_reload(page)

    def accept(dialog):  # Finish, Complete Grading, Archive and Skip Grading ask first (issue 19): yes
        dialog.accept()

    page.on("dialog", accept)
    for label, target in [
        ("Start Session", "RUNNING"),
        ("Finish Session", "COLLECTING"),
        ("Start Grading", "GRADING"),
        ("Complete Grading", "STOPPING"),
    ]:
        button(page, label).click()
        expect(status_of(page)).to_have_attribute("data-status", target)
        expect(page.locator("#toasts")).to_contain_text(target)
        session.refresh_from_db()
        assert session.status == target
    # The reconciler stops the lab and keeps it for review; the page follows by itself. Archive ends the hold,
    # then the reconciler archives it (here by hand: no loop runs in this test) and the page follows again.
    held = timezone.now() + timedelta(hours=1)
    session_transition(session, "STOPPED", actor="lablet-reconciler", hold_until=held)
    expect(status_of(page)).to_have_attribute("data-status", "STOPPED", timeout=2000)
    expect(page.locator("#waiting-for")).to_contain_text("Lab kept for review")
    button(page, "Archive").click()
    expect(page.locator("#toasts")).to_contain_text("Archiving")
    session_transition(session, "ARCHIVED", actor="lablet-reconciler")
    expect(status_of(page)).to_have_attribute("data-status", "ARCHIVED", timeout=2000)
    expect(page.locator("#session-actions")).to_contain_text("Finished: no actions.")
    assert page.locator("#live").get_attribute("hx-trigger") is None  # polling stopped
    timeline = page.locator(".timeline").inner_text()
    for step in ("RUNNING", "COLLECTING", "GRADING", "STOPPING", "STOPPED", "ARCHIVED"):
        assert step in timeline
    assert_no_reload(page)
    moves = [c.actor for c in session.history.filter(entity="session") if c.from_status != c.to_status]
    assert moves[-6:] == ["admin"] * 4 + ["lablet-reconciler"] * 2
    assert session.history.filter(actor="admin", reason__contains="review hold ended").exists()

    skipping = make_session("COLLECTING", definition=definition, worker=worker, owner="gina")
    page.goto(f"/sessions/{skipping.pk}/")
    mark_no_reload(page)
    button(page, "Skip Grading").click()
    expect(status_of(page)).to_have_attribute("data-status", "STOPPING")
    assert_no_reload(page)


def test_terminate_asks_first_and_a_dismissed_dialog_changes_nothing(open_page, admin_user, fleet):
    from playwright.sync_api import expect

    doomed = make_session("RUNNING", definition=fleet["definition"], worker=fleet["worker"], owner="hank")
    page = open_page(admin_user, f"/sessions/{doomed.pk}/")
    mark_no_reload(page)
    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    button(page, "Terminate").click()
    page.wait_for_timeout(300)
    assert dialogs and dialogs[0].startswith("Terminate this session?")
    doomed.refresh_from_db()
    assert doomed.status == "RUNNING"  # dismissed: nothing happened
    page.once("dialog", lambda dialog: dialog.accept())
    button(page, "Terminate").click()
    expect(status_of(page)).to_have_attribute("data-status", "TERMINATED")
    doomed.refresh_from_db()
    assert (doomed.status, doomed.end_reason) == ("TERMINATED", "TERMINATED")
    shot(page, "31-session-terminated")
    assert_no_reload(page)


def test_a_stale_button_gives_a_message_not_an_error_page(open_page, admin_user, fleet):
    from playwright.sync_api import expect

    session = make_session("READY", definition=fleet["definition"], worker=fleet["worker"], owner="ivy")
    page = open_page(admin_user, f"/sessions/{session.pk}/")
    mark_no_reload(page)
    # Hold back live updates so the page still shows the old buttons when the state moves on.
    page.route(re.compile(r".*/sessions/[0-9a-f-]+/\?v=.*"), lambda route: route.fulfill(status=204))
    session_transition(session, "RUNNING", actor="lds-webhook")
    button(page, "Start Session").click()
    expect(page.locator("#toasts")).to_contain_text("“Start Session” no longer applies: the session is now RUNNING")
    expect(status_of(page)).to_have_attribute("data-status", "RUNNING")
    expect(button(page, "Finish Session")).to_be_visible()
    expect(page.get_by_role("heading", name="Session of ivy")).to_be_visible()
    shot(page, "32-stale-button-message")
    assert_no_reload(page)


def test_a_change_made_elsewhere_shows_within_two_seconds(open_page, admin_user, fleet):
    from playwright.sync_api import expect

    session = make_session("READY", definition=fleet["definition"], worker=fleet["worker"], owner="jack")
    detail = open_page(admin_user, f"/sessions/{session.pk}/")
    listing = open_page(admin_user, "/sessions/?owner=jack")
    mark_no_reload(detail)
    mark_no_reload(listing)
    started = time.monotonic()
    session_transition(session, "RUNNING", actor="lds-webhook", reason="session.running")
    expect(status_of(detail)).to_have_attribute("data-status", "RUNNING", timeout=2000)
    expect(listing.locator("table.sessions tbody")).to_contain_text("RUNNING", timeout=2000)
    assert time.monotonic() - started < 2.0
    expect(detail.locator(".timeline")).to_contain_text("session.running")
    assert_no_reload(detail)
    assert_no_reload(listing)


def test_an_instructor_sees_no_admin_actions(open_page, instructor, admin_user, fleet):
    from playwright.sync_api import expect

    worker = fleet["worker"]
    page = open_page(instructor, f"/workers/{worker.pk}/")
    expect(page.locator("#worker-status")).to_have_text("RUNNING")
    assert page.locator("#worker-actions").count() == 0
    for label in ("Start", "Stop", "Drain", "Cancel drain", "Terminate worker"):
        assert page.get_by_role("button", name=label, exact=True).count() == 0
    assert page.get_by_role("link", name="Settings").count() == 0
    page.goto("/workers/")
    assert page.get_by_text("New worker").count() == 0
    page.goto("/definitions/")
    assert page.get_by_role("link", name="Upload definition").count() == 0
    page.goto(f"/definitions/{fleet['definition'].pk}/")
    assert page.get_by_role("button", name="Deactivate").count() == 0
    shot(page, "33-instructor-definition")

    # An admin has them; Drain asks first, listing the sessions on the worker (SPEC §11); the others work
    # without a reload.
    admin = open_page(admin_user, f"/workers/{worker.pk}/")
    admin.get_by_role("button", name="Drain", exact=True).click()
    expect(admin).to_have_url(re.compile(rf"/workers/{worker.pk}/confirm/drain/\??$"))
    expect(admin.locator("table.affected")).to_contain_text("cand-running")
    admin.get_by_role("button", name="Drain worker", exact=True).click()
    expect(admin).to_have_url(re.compile(rf"/workers/{worker.pk}/$"))
    expect(admin.locator("#worker-status")).to_have_text("DRAINING")
    mark_no_reload(admin)
    admin.get_by_role("button", name="Cancel drain", exact=True).click()
    expect(admin.locator("#worker-status")).to_have_text("RUNNING")
    admin.once("dialog", lambda dialog: dialog.accept())
    admin.get_by_role("button", name="Terminate worker", exact=True).click()
    expect(admin.locator("#toasts")).to_contain_text("will be terminated")
    assert CMLWorker.objects.get(pk=worker.pk).desired_status == "TERMINATED"
    assert_no_reload(admin)


def test_the_csv_download_has_one_row_per_report(open_page, admin_user, fleet):
    for i in range(5):
        make_session("ARCHIVED", definition=fleet["definition"], worker=fleet["worker"], owner=f"csv-{i}")
    page = open_page(admin_user, "/reports/")
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:4] == ["report_id", "session_id", "reservation_id", "owner"]
    assert len(rows) - 1 == ScoreReport.objects.count() == 9
    assert len({row[0] for row in rows[1:]}) == 9
