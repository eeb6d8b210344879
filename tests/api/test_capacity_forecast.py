"""The capacity forecast (SPEC §10): `GET /api/v1/capacity/forecast` buckets booked demand (the capacity check's
demand model) against the fleet and the autoscaler's plan, in a bounded number of queries."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scheduling.forecast import forecast, projected_cost
from sessions.models import LabletSession
from tests.api.conftest import client_for
from tests.factories import DefinitionFactory, TemplateFactory, WorkerFactory
from workers.models import SystemSettings

pytestmark = pytest.mark.django_db
URL = "/api/v1/capacity/forecast"
MONDAY = datetime(2030, 1, 7, tzinfo=UTC)


def _book(definition, start, count):
    LabletSession.objects.bulk_create(
        LabletSession(
            definition=definition,
            definition_version=definition.version,
            owner=f"c-{start:%j%H%M}-{i}",
            timeslot_start=start,
            timeslot_end=start + timedelta(minutes=60),
        )
        for i in range(count)
    )


@pytest.fixture
def fleet():
    template = TemplateFactory(name="fc-medium", cpu_cores=16, memory_gb=64, storage_gb=400, max_nodes=60,
                               startup_minutes=10, cost_per_hour=0.768)  # fmt: skip
    system = SystemSettings.load()
    system.default_worker_template = template
    system.autoscaling_enabled = True
    system.max_workers_per_region = 50
    system.save()
    WorkerFactory(template=template)  # one RUNNING worker: 16 CPU
    return template


def test_an_exam_three_days_ahead_shows_its_bump_and_the_plan_launches_and_drains(fleet):
    definition = DefinitionFactory(cpu_cores=4, memory_gb=8)
    exam = MONDAY + timedelta(days=3, hours=9)
    _book(definition, exam, 40)  # 160 CPU: 10 workers of 16, one running already
    body = forecast(MONDAY, MONDAY + timedelta(days=7), 60, now=MONDAY)
    buckets = {b["start"]: b for b in body["buckets"]}
    assert len(buckets) == 7 * 24
    quiet, bump = buckets[exam - timedelta(days=1)], buckets[exam]
    assert quiet["demand"]["cpu"] == 0 and bump["demand"]["cpu"] == 160
    assert bump["capacity"]["cpu"] >= 160 and bump["capacity"]["licences"] == 10
    # The boot lead (20 min) puts the occupancy in the hour before: the launch is due then, its boot time earlier.
    launches = [e for b in body["buckets"] for e in b["planned"]["launch"]]
    assert launches and launches[0]["count"] == 9 and launches[0]["template"] == "fc-medium"
    assert launches[0]["at"] <= exam - timedelta(minutes=20 + 10)
    drains = [e for b in body["buckets"] for e in b["planned"]["drain"]]
    assert sum(e["count"] for e in drains) == 9 and drains[0]["at"] > exam
    assert bump["cost_per_hour"] == pytest.approx(10 * 0.768)
    week = projected_cost(body["buckets"], 60)
    assert week == pytest.approx(7 * 24 * 0.768 + 9 * 0.768 * 3, abs=0.8)  # the exam's hours on top


def test_a_week_with_2000_bookings_in_at_most_four_queries(fleet, staff_user):
    definitions = [DefinitionFactory(cpu_cores=2), DefinitionFactory(cpu_cores=4)]
    for day in range(7):
        for hour in (8, 10, 13, 15):
            for definition in definitions:
                _book(definition, MONDAY + timedelta(days=day, hours=hour), 36)
    assert LabletSession.objects.count() == 2016
    window = (MONDAY, MONDAY + timedelta(days=7), 60)
    with CaptureQueriesContext(connection) as queries:
        forecast(*window, now=MONDAY)
    assert len(queries.captured_queries) <= 4, [q["sql"][:80] for q in queries.captured_queries]
    response = client_for(staff_user).get(URL, {"from": MONDAY.isoformat(), "to": window[1].isoformat(), "step": 60})
    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["buckets"]) == 168
    first = body["buckets"][8]
    assert set(first) == {"start", "demand", "capacity", "planned", "cost_per_hour"}
    assert set(first["demand"]) == {"cpu", "memory_gb", "storage_gb", "nodes", "licences"}
    assert first["demand"]["cpu"] == 36 * 6


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2030-13-01T00:00"}, "to"),
        ({"step": "ten"}, "step"),
        ({"step": "1"}, "step"),
        ({"from": "2030-01-07T00:00Z", "to": "2030-01-06T00:00Z"}, "to"),
        ({"from": "2030-01-07T00:00Z", "to": "2030-02-07T00:00Z"}, "to"),
        ({"from": "2030-01-07T00:00Z", "to": "2030-01-20T00:00Z", "step": "5"}, "step"),
        ({"from": "9999-12-31T00:00Z"}, "from"),
        ({"from": "9999-12-30T00:00Z", "to": "9999-12-31T23:00Z"}, "to"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(staff_user, params, field):
    response = client_for(staff_user).get(URL, params)
    assert response.status_code == 400, response.content
    assert field in str(response.json())


def test_the_default_window_is_the_next_seven_days(fleet, staff_user):
    response = client_for(staff_user).get(URL)
    assert response.status_code == 200
    assert len(response.json()["buckets"]) == 168
