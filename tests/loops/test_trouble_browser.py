"""Trouble in sight (SPEC §11) in a real browser with the control loops running: a lab deleted behind LCM's back
shows on the dashboard's needs-attention panel by itself, the session page offers "Re-instantiate", which brings
the session back with a fresh lab and the same ports; Drain asks first, listing the session on the worker; the
dashboard's loop freshness comes from the heartbeats. Chromium through Playwright, the in-process loops and the
simulators."""

import re

import pytest

from sessions.booking import session_create
from sessions.models import LabletSession
from tests.factories import DefinitionFactory
from tests.support.browser import button, status_of
from tests.support.loops import status_of as db_status
from tests.support.simulators import sim_control
from tests.support.waiting import poll
from workers.models import CMLWorker, SystemSettings

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _ready(owner):
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner=owner, actor="t")
    assert poll(lambda: db_status(session) == "READY", timeout=30), db_status(session)
    return LabletSession.objects.get(pk=session.pk)


def test_a_deleted_lab_shows_on_the_dashboard_and_is_reinstantiated_from_the_page(
    open_page, instructor, sims, sim_worker, live_loops, settings
):
    from playwright.sync_api import expect

    settings.LCM_DRIFT_CHECK_SECONDS = 1.0
    sim_worker("w1")
    session = _ready("drifty@example.com")
    old_lab, ports = session.cml_lab_id, session.allocated_ports
    dashboard = open_page(instructor, "/")
    panel = dashboard.locator("#attention")
    expect(panel.locator('[data-kind="drift"]')).to_have_count(0)
    # Loop freshness from the heartbeats the running loops leave, not "unknown".
    expect(dashboard.locator('#loop-freshness [data-loop="lablets"]')).to_have_attribute("data-state", "ok")
    expect(dashboard.locator("#loop-freshness")).to_contain_text("last tick")

    sim_control.delete(f"{sims.urls['cml']}/_sim/workers/w1/labs/{old_lab}", timeout=5).raise_for_status()

    item = panel.locator('[data-kind="drift"]')
    expect(item).to_contain_text("drifty@example.com", timeout=15_000)  # live: nobody reloads the dashboard
    expect(item).to_contain_text("gone from CML")
    item.get_by_role("link", name="drifty@example.com").click()

    expect(status_of(dashboard)).to_have_attribute("data-status", "READY")
    expect(dashboard.locator("#degraded")).to_contain_text("Degraded")
    dashboard.once("dialog", lambda dialog: dialog.accept())
    button(dashboard, "Re-instantiate").click()
    expect(dashboard.locator("#degraded")).to_have_count(0, timeout=20_000)
    expect(status_of(dashboard)).to_have_attribute("data-status", "READY")
    expect(dashboard.locator(".timeline")).to_contain_text("re-instantiated: fresh lab")
    session.refresh_from_db()
    assert session.cml_lab_id != old_lab and session.allocated_ports == ports and session.degraded_at is None


def test_drain_asks_first_listing_the_session_it_cuts_short(open_page, admin_user, sims, sim_worker, live_loops):
    from playwright.sync_api import expect

    worker = sim_worker("w1")
    session = _ready("on-w1@example.com")
    SystemSettings.objects.update_or_create(pk=1, defaults={"drain_timeout_minutes": 30})
    page = open_page(admin_user, f"/workers/{worker.pk}/")
    page.get_by_role("button", name="Drain", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/workers/{worker.pk}/confirm/drain/\??$"))
    expect(page.locator("table.affected")).to_contain_text("on-w1@example.com")
    # Booked for an hour; a drain now gives it 30 minutes: it ends after the deadline.
    expect(page.locator("#cut-short")).to_contain_text("on-w1@example.com")
    assert CMLWorker.objects.get(pk=worker.pk).status == "RUNNING"  # nothing done yet

    page.get_by_role("button", name="Drain worker", exact=True).click()
    expect(page.locator("#worker-status")).to_have_text("DRAINING")
    attention = open_page(admin_user, "/attention/")
    expect(attention.locator('[data-kind="drain_deadline"]')).to_contain_text("on-w1@example.com")
    assert db_status(session) == "READY"
