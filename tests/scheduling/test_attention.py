"""Needs attention (SPEC §11): every kind of item, the reason an unplaceable booking waits (its page, the list),
the REST endpoint's roles and its query count, and loop freshness on the dashboard from the heartbeats."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from lcm.loops import LOOPS
from lcm.models import LoopHeartbeat
from scheduling.attention import attention_items, waiting_reason
from tests.factories import DefinitionFactory, GradingSessionFactory, SessionFactory, WorkerFactory
from workers.models import ScaleDecision

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_loops():
    """Every registered loop ticked just now (as the running loops leave their heartbeats)."""
    for name in LOOPS:
        LoopHeartbeat.objects.create(name=name, last_tick_at=timezone.now(), ticks=1)


def kinds(items=None):
    return sorted({i.kind for i in (attention_items() if items is None else items)})


def too_big_booking(worker_cpu=4, **fields):
    WorkerFactory(name="small-1", cpu_cores=worker_cpu)
    definition = DefinitionFactory(cpu_cores=64)
    return SessionFactory(definition=definition, timeslot_start=timezone.now() + timedelta(minutes=1), **fields)


def test_an_unplaceable_booking_says_why_on_its_page_and_in_the_list(instructor, client, api, fresh_loops):
    session = too_big_booking(owner="too-big")
    ScaleDecision.objects.create(action="WAIT", reason="autoscaling is off", sessions=[str(session.pk)])

    reason = waiting_reason(session)
    assert reason.startswith("Not placed yet: no worker fits (small-1: ")
    assert "not enough cpu" in reason and "Autoscaler: autoscaling is off." in reason

    client.force_login(instructor)
    page = client.get(f"/sessions/{session.pk}/").content.decode()
    assert 'id="waiting-for"' in page and "no worker fits (small-1: " in page

    items = api.get("/api/v1/attention/").json()
    assert items["count"] == 1 and set(items) == {"count", "next", "previous", "results"}
    [item] = items["results"]
    assert item["kind"] == "unplaceable" and item["severity"] == "warning"
    assert item["object"] == {
        "type": "session",
        "id": str(session.pk),
        "name": "too-big",
        "url": f"/sessions/{session.pk}/",
    }
    assert "no worker fits (small-1: " in item["reason"] and "autoscaler: autoscaling is off" in item["reason"]
    assert item["since"]


def test_a_placeable_or_later_booking_is_not_listed_and_its_page_says_what_it_waits_for(fresh_loops):
    WorkerFactory(name="big-1")
    soon = SessionFactory(timeslot_start=timezone.now() + timedelta(minutes=1))
    later = SessionFactory(timeslot_start=timezone.now() + timedelta(hours=5))
    assert kinds() == []
    assert waiting_reason(soon) == "Not placed yet: a worker fits, so the scheduler places it on its next tick."
    assert waiting_reason(later).startswith("Not placed yet: placement starts 35 min before the timeslot, at ")


def test_every_kind_of_trouble_is_listed_most_severe_first(fresh_loops):
    now = timezone.now()
    too_big_booking()
    worker = WorkerFactory(name="drainer", status="DRAINING", drain_started_at=now, drain_deadline=now)
    SessionFactory(status="RUNNING", worker=worker, timeslot_start=now, timeslot_end=now + timedelta(hours=1))
    SessionFactory(status="READY", degraded_at=now, degraded_reason="its lab L1 is gone from CML")
    SessionFactory(status="TERMINATED", end_reason="FAILED", end_reason_detail="gave up", ended_at=now)
    SessionFactory(status="TERMINATED", end_reason="FAILED", ended_at=now - timedelta(days=3))  # old news
    GradingSessionFactory(status="FAULTED", error_message="engine said no")
    WorkerFactory(name="broken", status="FAILED", last_error="instance gone")
    WorkerFactory(name="silent", status="RUNNING", service_status="UNREACHABLE")
    LoopHeartbeat.objects.filter(name="lablets").update(last_tick_at=now - timedelta(hours=1))

    items = attention_items()
    assert kinds(items) == sorted(
        [
            "unplaceable", "drain_deadline", "drift", "session_failed", "grading_faulted", "worker_failed",
            "worker_unreachable", "stale_loop",
        ]
    )  # fmt: skip
    assert [i.severity for i in items] == sorted(
        (i.severity for i in items), key=["critical", "error", "warning"].index
    )
    by_kind = {i.kind: i for i in items}
    assert "drainer drains by" in by_kind["drain_deadline"].reason and "cut short" in by_kind["drain_deadline"].reason
    assert by_kind["worker_failed"].object["name"] == "broken" and "instance gone" in by_kind["worker_failed"].reason
    assert by_kind["stale_loop"].object["id"] == "lablets" and "stale" in by_kind["stale_loop"].reason
    assert "engine said no" in by_kind["grading_faulted"].reason
    assert len([i for i in items if i.kind == "session_failed"]) == 1


def _trouble(n):
    """`n` of each kind of session trouble, on a few workers."""
    now = timezone.now()
    small = WorkerFactory(cpu_cores=1)
    drainer = WorkerFactory(status="DRAINING", drain_started_at=now, drain_deadline=now)
    big = DefinitionFactory(cpu_cores=64)
    for _ in range(n):
        SessionFactory(definition=big, timeslot_start=now + timedelta(minutes=1))
        SessionFactory(status="RUNNING", worker=drainer, timeslot_start=now, timeslot_end=now + timedelta(hours=1))
        SessionFactory(status="READY", worker=small, degraded_at=now, degraded_reason="gone")
        SessionFactory(status="TERMINATED", end_reason="FAILED", ended_at=now)
        GradingSessionFactory(status="FAULTED")
        WorkerFactory(status="FAILED")


def _attention_queries(api) -> tuple[int, int]:
    # Every loop ticked just now: making the trouble may take longer than a fast loop's staleness allowance on a
    # loaded machine, and a stale loop would be one more item.
    LoopHeartbeat.objects.update(last_tick_at=timezone.now())
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/v1/attention/")
    assert response.status_code == 200
    return len(queries), response.json()["count"]


def test_the_attention_endpoint_costs_the_same_queries_for_5_or_50_of_everything(api, fresh_loops):
    _attention_queries(api)  # the first call creates the settings row
    _trouble(5)
    few, listed_few = _attention_queries(api)
    _trouble(45)
    many, listed_many = _attention_queries(api)
    # (the gradings' own sessions are due too, and fit no worker: seven items per round)
    assert listed_few == 7 * 5 and listed_many == 7 * 50
    assert few == many, (few, many)


def test_the_attention_endpoint_is_for_instructors_and_admins(django_user_model):
    anonymous = APIClient().get("/api/v1/attention/")
    assert anonymous.status_code in (401, 403)
    nobody = APIClient()
    nobody.force_authenticate(django_user_model.objects.create_user("nobody", "n@example.com", "pw"))
    assert nobody.get("/api/v1/attention/").status_code == 403


def test_the_attention_page_and_the_dashboard_panel(instructor, client, fresh_loops):
    session = too_big_booking(owner="too-big")
    client.force_login(instructor)
    page = client.get("/attention/").content.decode()
    assert "Needs attention" in page and 'data-kind="unplaceable"' in page and f"/sessions/{session.pk}/" in page
    dashboard = client.get("/").content.decode()
    assert 'id="attention"' in dashboard and 'data-kind="unplaceable"' in dashboard


def test_dashboard_loop_freshness_comes_from_the_heartbeats(instructor, client):
    client.force_login(instructor)
    before = client.get("/").content.decode()
    assert "unknown" not in before and 'data-state="no tick reported"' in before

    ticked = timezone.now()
    for name in LOOPS:
        LoopHeartbeat.objects.create(name=name, last_tick_at=ticked, ticks=3)
    LoopHeartbeat.objects.filter(name="workers").update(last_tick_at=ticked - timedelta(hours=1))
    page = client.get("/").content.decode()
    assert 'data-loop="lablets" data-state="ok"' in page and f'data-fmt="H:i:s">{ticked:%H:%M:%S}</time>' in page
    assert 'data-loop="workers" data-state="stale"' in page
    assert "freshness is unknown" not in page


def test_the_scheduler_page_says_why_each_due_booking_waits(instructor, client):
    session = too_big_booking(owner="too-big")
    SessionFactory(owner="much-later", timeslot_start=timezone.now() + timedelta(hours=5))
    client.force_login(instructor)
    html = client.get("/scheduler/").content.decode()
    row = html[html.index(">too-big</a>") : html.index("</tr>", html.index(">too-big</a>"))]
    assert "no worker fits (small-1: not enough cpu" in row
    later = html[html.index(">much-later</a>") : html.index("</tr>", html.index(">much-later</a>"))]
    assert "not due yet" in later
    assert session.status == "PENDING"


def test_a_scheduled_session_says_when_its_lab_comes_up(instructor, client):
    worker = WorkerFactory()
    start = timezone.now() + timedelta(hours=2)
    session = SessionFactory(status="SCHEDULED", worker=worker, timeslot_start=start)
    reason = waiting_reason(session)
    assert reason.startswith("Placed; the lab is brought up 20 min before the timeslot, at ")
    client.force_login(instructor)
    assert reason in client.get(f"/sessions/{session.pk}/").content.decode()
