"""Issue 19 in Chromium: every destructive action asks first. Dismissing the dialog, or cancelling the confirm
page, changes nothing; accepting does it. Covers the session page's Terminate, Finish and Requeue (with the
worker excluded), a worker's Drain and Terminate, an exam's bulk Terminate and an admin action, and Terminate
with JavaScript off (the confirm page instead of the dialog)."""

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from sessions.models import Exam, LabletSession
from tests.pages.conftest import make_session
from tests.support.browser import button, status_of
from workers.models import CMLWorker

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _ask_then(page, click, *, accept: bool) -> list[str]:
    """Click something that opens a confirm() dialog, answer it, and return what it asked."""
    asked = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", answer)
    click()
    page.wait_for_timeout(300)
    return asked


def test_terminate_and_finish_ask_in_a_dialog(open_page, admin_user, fleet):
    from playwright.sync_api import expect

    definition, worker = fleet["definition"], fleet["worker"]
    for label, target, question in (
        ("Finish Session", "COLLECTING", "Finish the session of safe-finish? The candidate loses access"),
        ("Terminate", "TERMINATED", "Terminate this session? safe-terminate's lab on worker-a is torn down"),
    ):
        owner = "safe-finish" if target == "COLLECTING" else "safe-terminate"
        session = make_session("RUNNING", definition=definition, worker=worker, owner=owner)
        page = open_page(admin_user, f"/sessions/{session.pk}/")
        press = button(page, label).click
        asked = _ask_then(page, press, accept=False)
        assert asked and asked[0].startswith(question), asked
        assert LabletSession.objects.get(pk=session.pk).status == "RUNNING"  # dismissed: nothing happened
        assert _ask_then(page, press, accept=True)
        expect(status_of(page)).to_have_attribute("data-status", target)
        assert LabletSession.objects.get(pk=session.pk).status == target


def test_requeue_explains_itself_and_excludes_the_worker(open_page, admin_user, fleet):
    from playwright.sync_api import expect

    session = fleet["sessions"]["SCHEDULED"]
    page = open_page(admin_user, f"/sessions/{session.pk}/")
    button(page, "Requeue").click()
    expect(page).to_have_url(re.compile(rf"/sessions/{session.pk}/confirm/requeue/\??$"))
    expect(page.locator("#requeue-explained")).to_contain_text("next placement tick places it again")
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(re.compile(rf"/sessions/{session.pk}/$"))
    assert LabletSession.objects.get(pk=session.pk).status == "SCHEDULED"  # cancelled: nothing happened

    button(page, "Requeue").click()
    page.get_by_label("Do not place it on worker-a again").check()
    page.locator("#confirm").get_by_role("button", name="Requeue").click()
    expect(page).to_have_url(re.compile(rf"/sessions/{session.pk}/$"))
    expect(status_of(page)).to_have_attribute("data-status", "PENDING")
    expect(page.locator("#toasts")).to_contain_text("not on the worker it left")
    requeued = LabletSession.objects.get(pk=session.pk)
    assert (requeued.status, requeued.excluded_worker_id) == ("PENDING", fleet["worker"].pk)
    expect(page.locator(".timeline")).to_contain_text("not to be placed on worker-a again")


def test_worker_drain_and_terminate_ask_first(open_page, admin_user, fleet):
    from playwright.sync_api import expect

    worker = fleet["worker"]
    page = open_page(admin_user, f"/workers/{worker.pk}/")
    actions = page.locator("#worker-actions")
    actions.get_by_role("button", name="Drain", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/workers/{worker.pk}/confirm/drain/\??$"))
    page.get_by_role("link", name="Cancel").click()
    assert CMLWorker.objects.get(pk=worker.pk).status == "RUNNING"
    actions.get_by_role("button", name="Drain", exact=True).click()
    page.get_by_role("button", name="Drain worker", exact=True).click()
    expect(page.locator("#worker-status")).to_have_text("DRAINING")

    terminate = actions.get_by_role("button", name="Terminate worker", exact=True)
    asked = _ask_then(page, terminate.click, accept=False)
    assert asked and asked[0].startswith("Terminate this worker?")
    assert CMLWorker.objects.get(pk=worker.pk).desired_status == "RUNNING"
    assert _ask_then(page, terminate.click, accept=True)
    expect(page.locator("#toasts")).to_contain_text("will be terminated")
    assert CMLWorker.objects.get(pk=worker.pk).desired_status == "TERMINATED"


def test_an_exam_bulk_action_asks_first(open_page, instructor, fleet):
    from playwright.sync_api import expect

    now = timezone.now()
    exam = Exam.objects.create(
        name="Safe exam", definition=fleet["definition"], timeslot_start=now, timeslot_end=now + timedelta(hours=1)
    )
    sessions = [
        make_session("RUNNING", definition=fleet["definition"], worker=fleet["worker"], owner=f"x{i}", exam=exam)
        for i in range(2)
    ]
    page = open_page(instructor, f"/exams/{exam.pk}/")
    page.locator("#bulk-actions").get_by_role("button", name="Terminate").click()
    expect(page.locator("#confirm")).to_contain_text("Terminate 2 sessions")
    page.locator("#confirm").get_by_role("link", name="Cancel").click()
    assert {s.status for s in LabletSession.objects.filter(exam=exam)} == {"RUNNING"}
    page.locator("#bulk-actions").get_by_role("button", name="Terminate").click()
    page.get_by_role("button", name="Terminate 2 sessions").click()
    expect(page.locator("main")).to_contain_text("Terminate: 2 done, 0 refused")
    assert {s.status for s in LabletSession.objects.filter(pk__in=[s.pk for s in sessions])} == {"TERMINATED"}


def test_an_admin_action_asks_on_an_intermediate_page(open_page, admin_user, fleet):
    from playwright.sync_api import expect

    session = fleet["sessions"]["READY"]
    page = open_page(admin_user, f"/admin/lablets/labletsession/?q={session.owner}")

    def choose_terminate():
        page.locator(f'input[name="_selected_action"][value="{session.pk}"]').check()
        page.locator('select[name="action"]').select_option("terminate_sessions")
        page.locator('button[name="index"]').first.click()  # "Go"

    choose_terminate()
    expect(page.locator("#action-question")).to_contain_text("Terminate (→ TERMINATED): 1 selected")
    expect(page.locator("#action-objects")).to_contain_text(session.owner)
    page.get_by_role("link", name="No, take me back").click()
    assert LabletSession.objects.get(pk=session.pk).status == "READY"
    choose_terminate()
    page.get_by_role("button", name=re.compile("^Yes, terminate")).click()
    expect(page.locator(".messagelist")).to_contain_text("1 of 1")
    assert LabletSession.objects.get(pk=session.pk).status == "TERMINATED"


def test_without_javascript_terminate_shows_the_confirm_page(browser, live_server, admin_user, fleet):
    session = make_session("RUNNING", definition=fleet["definition"], worker=fleet["worker"], owner="no-js")
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    client = Client()
    client.force_login(admin_user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
    try:
        page = context.new_page()
        page.goto(f"/sessions/{session.pk}/")
        button(page, "Terminate").click()  # a plain form post: no dialog can ask
        page.locator("#confirm").wait_for()
        assert "no-js's lab on worker-a is torn down" in page.locator("#confirm").inner_text()
        assert LabletSession.objects.get(pk=session.pk).status == "RUNNING"
        page.locator("#confirm").get_by_role("button", name="Terminate").click()
        page.wait_for_url(re.compile(rf"/sessions/{session.pk}/$"))
        assert LabletSession.objects.get(pk=session.pk).status == "TERMINATED"
    finally:
        context.close()
