"""REST for exams and the capacity check (SPEC §8, §10): book, 400 naming rows, 409 with the capacity, actions,
the detail's query count, permissions, and the check itself."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions.models import Exam, LabletSession
from tests.factories import DefinitionFactory, WorkerFactory
from workers.models import SystemSettings

pytestmark = pytest.mark.django_db


def _slot(hours=2, minutes=60):
    start = (timezone.now() + timedelta(hours=hours)).replace(second=0, microsecond=0)
    return start.isoformat(), (start + timedelta(minutes=minutes)).isoformat()


def _body(definition, n, **extra):
    start, end = _slot()
    return {
        "name": "Networking 101", "definition_id": str(definition.pk), "timeslot_start": start, "timeslot_end": end,
        "candidates": [{"owner": f"c{i}@example.com", "reservation_id": f"R{i}"} for i in range(n)], **extra,
    }  # fmt: skip


@pytest.fixture
def refuse(db):
    SystemSettings.objects.update_or_create(pk=1, defaults={"admission": "refuse"})


@pytest.fixture
def small_fleet(db):
    """Two workers of 16 CPU: 16 sessions of 2 CPU."""
    return [WorkerFactory(cpu_cores=16, memory_gb=64) for _ in range(2)]


def test_book_an_exam(instructor_api, refuse, small_fleet):
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    response = instructor_api.post("/api/v1/exams/", _body(definition, 10), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    exam = Exam.objects.get()
    assert body["exam"]["id"] == exam.pk and body["exam"]["counts"]["PENDING"] == 10
    assert body["exam"]["session_count"] == 10 and response["Location"].endswith(f"/api/v1/exams/{exam.pk}/")
    assert sorted(body["session_ids"]) == sorted(str(pk) for pk in exam.sessions.values_list("pk", flat=True))
    assert body["capacity"]["fits"] is True and body["capacity"]["needed"]["cpu"] == 20
    assert exam.created_by == "api-instructor"


def test_a_roster_the_fleet_cannot_hold_is_409_with_the_numbers_and_nothing_booked(instructor_api, refuse, small_fleet):
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    response = instructor_api.post("/api/v1/exams/", _body(definition, 20), format="json")
    assert response.status_code == 409, response.content
    body = response.json()
    assert body["code"] == "capacity" and "cannot hold" in body["detail"]
    capacity = body["capacity"]
    assert capacity["needed"]["cpu"] == 40 and capacity["available"]["cpu"] == 32
    assert capacity["shortfall"] == {"cpu": 8, "sessions": 4}
    assert any(reason.startswith("needs 40 CPU at") for reason in capacity["reasons"])
    assert not Exam.objects.exists() and not LabletSession.objects.exists()

    warned = instructor_api.post("/api/v1/exams/", _body(definition, 20, on_capacity="warn"), format="json")
    assert warned.status_code == 201
    assert warned.json()["capacity"]["fits"] is False and warned.json()["capacity"]["shortfall"]["sessions"] == 4
    assert LabletSession.objects.count() == 20


def test_bad_rows_are_400_naming_both_rows_and_nothing_is_booked(instructor_api, small_fleet):
    definition = DefinitionFactory()
    body = _body(definition, 10)
    body["candidates"][3]["owner"] = ""
    body["candidates"][8]["reservation_id"] = "R1"
    response = instructor_api.post("/api/v1/exams/", body, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()
    assert errors["candidates[3].owner"] == ["row 4: owner is required"]
    assert errors["candidates[8].reservation_id"][0].startswith("row 9: reservation_id 'R1' repeats row 2")
    assert not Exam.objects.exists() and not LabletSession.objects.exists()


@pytest.mark.parametrize(
    "change",
    [
        {"candidates": []},
        {"candidates": "bob"},
        {"name": ""},
        {"definition_id": "nope"},
        {"on_capacity": "maybe"},
        {"timeslot_end": "2020-01-01T00:00:00Z"},
        {"candidates": [{"owner": "a\x00b"}]},
    ],
)
def test_bad_bodies_are_400(instructor_api, change):
    body = {**_body(DefinitionFactory(), 2), **change}
    response = instructor_api.post("/api/v1/exams/", body, format="json")
    assert response.status_code == 400, response.content
    assert not LabletSession.objects.exists()


def test_roles(nobody_api, anon_api):
    assert anon_api.get("/api/v1/exams/").status_code == 401
    assert nobody_api.get("/api/v1/exams/").status_code == 403
    assert nobody_api.post("/api/v1/capacity/check", {}, format="json").status_code == 403


def test_detail_and_actions(instructor_api):
    definition = DefinitionFactory(max_duration_minutes=60)
    body = _body(definition, 3)
    exam_id = instructor_api.post("/api/v1/exams/", body, format="json").json()["exam"]["id"]
    detail = instructor_api.get(f"/api/v1/exams/{exam_id}/").json()
    assert detail["counts"]["PENDING"] == 3 and len(detail["sessions"]) == 3
    row = detail["sessions"][0]
    assert row["owner"] == "c0@example.com" and row["status"] == "PENDING" and row["time_left_seconds"] > 3600

    response = instructor_api.post(
        f"/api/v1/exams/{exam_id}/actions/", {"action": "extend", "minutes": 10}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["counts"] == {"ok": 3, "refused": 0}
    response = instructor_api.post(f"/api/v1/exams/{exam_id}/actions/", {"action": "start"}, format="json")
    assert response.json()["counts"] == {"ok": 0, "refused": 3}
    assert response.json()["results"][0]["detail"] == "PENDING: Start applies to READY sessions"
    assert (
        instructor_api.post(f"/api/v1/exams/{exam_id}/actions/", {"action": "extend"}, format="json").status_code == 400
    )
    assert instructor_api.post(f"/api/v1/exams/{exam_id}/actions/", {"action": "x"}, format="json").status_code == 400
    assert instructor_api.post("/api/v1/exams/999999/actions/", {"action": "start"}, format="json").status_code == 404


def test_the_detail_costs_the_same_queries_for_10_and_200_sessions(instructor_api):
    definition = DefinitionFactory()
    counts = []
    for n in (10, 200):
        exam_id = instructor_api.post("/api/v1/exams/", _body(definition, n) | {"candidates": [
            {"owner": f"o{n}-{i}"} for i in range(n)]}, format="json").json()["exam"]["id"]  # fmt: skip
        instructor_api.get(f"/api/v1/exams/{exam_id}/")  # warm-up
        with CaptureQueriesContext(connection) as queries:
            response = instructor_api.get(f"/api/v1/exams/{exam_id}/")
        assert len(response.json()["sessions"]) == n
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


def test_the_capacity_check(instructor_api, small_fleet):
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    start, end = _slot()
    body = {"definition_id": str(definition.pk), "timeslot_start": start, "timeslot_end": end, "count": 16}
    verdict = instructor_api.post("/api/v1/capacity/check", body, format="json").json()
    assert verdict["fits"] is True and verdict["available"]["sessions"] == 16 and verdict["shortfall"] == {}
    verdict = instructor_api.post("/api/v1/capacity/check", {**body, "count": 17}, format="json").json()
    assert verdict["fits"] is False and verdict["shortfall"]["sessions"] == 1
    assert instructor_api.post("/api/v1/capacity/check", {**body, "count": 0}, format="json").status_code == 400
    bad_slot = {**body, "timeslot_end": start}
    response = instructor_api.post("/api/v1/capacity/check", bad_slot, format="json")
    assert response.status_code == 400 and "timeslot_end" in response.json()


def test_a_single_booking_is_admitted_the_same_way(instructor_api, refuse):
    definition = DefinitionFactory()
    response = instructor_api.post(
        "/api/v1/sessions/", {"definition_id": str(definition.pk), "owner": "a"}, format="json"
    )
    assert response.status_code == 409 and response.json()["code"] == "capacity"
    assert "no worker can take" in response.json()["capacity"]["reasons"][0]
    WorkerFactory()
    response = instructor_api.post(
        "/api/v1/sessions/", {"definition_id": str(definition.pk), "owner": "a"}, format="json"
    )
    assert response.status_code == 201
