"""Stop and Drain ask first (SPEC §11): a confirm step listing the sessions on the worker, warning when the drain
deadline cuts a booked session short; the same warning is a needs-attention item once the worker drains."""

import pytest

from scheduling.attention import attention_items
from workers.models import CMLWorker, SystemSettings

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}
# The fleet's sessions on worker-a that hold capacity (SPEC §2.2), and those that do not.
HOLDING = ("scheduled", "instantiating", "ready", "running", "collecting", "grading", "stopping", "expired")
NOT_HOLDING = ("pending", "stopped", "archived", "terminated")


def test_drain_asks_first_listing_the_sessions_and_those_the_deadline_cuts_short(admin_client, fleet):
    worker = fleet["worker"]
    SystemSettings.objects.update_or_create(pk=1, defaults={"drain_timeout_minutes": 30})
    detail = admin_client.get(f"/workers/{worker.pk}/").content.decode()
    assert f'<form method="get" action="/workers/{worker.pk}/confirm/drain/">' in detail

    page = admin_client.get(f"/workers/{worker.pk}/confirm/drain/")
    html = page.content.decode()
    assert page.status_code == 200 and "Drain worker-a?" in html
    for owner in HOLDING:
        assert f">cand-{owner}</a>" in html, owner
    for owner in NOT_HOLDING:
        assert f">cand-{owner}</a>" not in html, owner
    # Booked to end an hour from now, past the 30-minute deadline: cut short (not those already on their way out).
    warning = html[html.index('id="cut-short"') : html.index("</div>", html.index('id="cut-short"'))]
    assert "booked past the drain deadline" in warning
    for owner in ("scheduled", "instantiating", "ready", "running", "collecting", "grading"):
        assert f">cand-{owner}</a>" in warning, owner
    assert "cand-stopping" not in warning and "cand-expired" not in warning
    assert CMLWorker.objects.get(pk=worker.pk).status == "RUNNING"  # asking changed nothing

    confirmed = admin_client.post(
        f"/workers/{worker.pk}/actions/drain/", {"expected": "RUNNING", "confirmed": "1"}, follow=True
    )
    assert confirmed.status_code == 200 and "is draining" in confirmed.content.decode()
    assert CMLWorker.objects.get(pk=worker.pk).status == "DRAINING"
    cut = {i.object["name"] for i in attention_items() if i.kind == "drain_deadline"}
    assert cut == {f"cand-{o}" for o in ("scheduled", "instantiating", "ready", "running", "collecting", "grading")}


def test_a_long_enough_drain_warns_of_nothing(admin_client, fleet):
    SystemSettings.objects.update_or_create(pk=1, defaults={"drain_timeout_minutes": 600})
    html = admin_client.get(f"/workers/{fleet['worker'].pk}/confirm/drain/").content.decode()
    assert 'id="cut-short"' not in html and ">cand-running</a>" in html


def test_stop_asks_first_and_warns_for_every_live_session(admin_client, fleet):
    worker = fleet["worker"]
    html = admin_client.get(f"/workers/{worker.pk}/confirm/stop/").content.decode()
    assert "Stop worker-a?" in html and "every lab on it stops with it" in html
    assert 'id="cut-short"' in html and ">cand-running</a>" in html
    assert admin_client.post(f"/workers/{worker.pk}/actions/stop/", {"expected": "RUNNING", "confirmed": "1"})
    assert CMLWorker.objects.get(pk=worker.pk).desired_status == "STOPPED"


def test_an_unconfirmed_stop_or_drain_goes_to_the_confirm_step(admin_client, fleet):
    worker = fleet["worker"]
    for action in ("stop", "drain"):
        plain = admin_client.post(f"/workers/{worker.pk}/actions/{action}/", {"expected": "RUNNING"})
        assert plain.status_code == 302 and plain["Location"] == f"/workers/{worker.pk}/confirm/{action}/"
        htmx = admin_client.post(f"/workers/{worker.pk}/actions/{action}/", {"expected": "RUNNING"}, headers=HX)
        assert htmx["HX-Redirect"] == f"/workers/{worker.pk}/confirm/{action}/"
    worker.refresh_from_db()
    assert (worker.status, worker.desired_status) == ("RUNNING", "RUNNING")


def test_the_confirm_step_is_for_admins_and_only_for_stop_drain_and_terminate(admin_client, client, fleet, instructor):
    worker = fleet["worker"]
    assert admin_client.get(f"/workers/{worker.pk}/confirm/start/").status_code == 404
    assert admin_client.get(f"/workers/{worker.pk}/confirm/cancel-drain/").status_code == 404
    stopped = CMLWorker.objects.get(name="worker-b")
    gone = admin_client.get(f"/workers/{stopped.pk}/confirm/drain/", follow=True)
    assert "does not apply" in gone.content.decode()
    client.force_login(instructor)
    assert client.get(f"/workers/{worker.pk}/confirm/drain/").status_code == 403


def test_terminate_asks_first_without_javascript_and_with_it_carries_the_confirmation(admin_client, fleet):
    """Issue 19: a plain post of Terminate changes nothing and shows the confirm page listing the sessions that
    expire; the page's own post (and the dialog's htmx post, which carries `confirmed=1`) does it."""
    worker = fleet["worker"]
    detail = admin_client.get(f"/workers/{worker.pk}/").content.decode()
    assert 'hx-confirm="Terminate this worker?' in detail and '"confirmed": "1"' in detail
    plain = admin_client.post(f"/workers/{worker.pk}/actions/terminate/", {"expected": "RUNNING"})
    assert plain.status_code == 302 and plain["Location"] == f"/workers/{worker.pk}/confirm/terminate/"
    worker.refresh_from_db()
    assert worker.desired_status == "RUNNING"
    page = admin_client.get(plain["Location"]).content.decode()
    assert "EC2 instance is destroyed" in page and "cand-running" in page and 'name="confirmed" value="1"' in page
    done = admin_client.post(
        f"/workers/{worker.pk}/actions/terminate/", {"expected": "RUNNING", "confirmed": "1"}, follow=True
    )
    assert "will be terminated" in done.content.decode()
    worker.refresh_from_db()
    assert worker.desired_status == "TERMINATED"
    assert worker.history.filter(reason="Terminate worker from the worker page").exists()
