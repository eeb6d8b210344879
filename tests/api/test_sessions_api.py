"""`/api/v1/sessions/…` (SPEC §5.1): every route's happy path and its 400/401/403/404/409."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from sessions.models import LabletSession, SessionStatusChange
from tests.api.conftest import assert_conflict, assert_field_error
from tests.factories import (
    DefinitionFactory,
    GradingSessionFactory,
    ScoreReportFactory,
    SessionFactory,
    UserSessionFactory,
    WorkerFactory,
)

pytestmark = pytest.mark.django_db

SESSION_FIELDS = {
    "id", "definition_id", "definition_name", "definition_version", "owner", "reservation_id", "status",
    "timeslot_start", "timeslot_end", "worker_id", "worker_name", "lab_record_id", "cml_lab_id", "allocated_ports",
    "scheduled_at", "started_at", "ended_at", "duration_seconds", "end_reason", "end_reason_detail",
    "cleanup_pending", "grade_result", "attempts", "last_error", "next_attempt_at", "created_by", "created_at",
    "updated_at", "degraded_at", "degraded_reason",
}  # fmt: skip
UNKNOWN = uuid.uuid4()


def iso(dt):
    return dt.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------
# List and detail
# ---------------------------------------------------------------------------------------


def test_list_is_a_page_of_sessions_with_spec_names(instructor_api, session):
    response = instructor_api.get("/api/v1/sessions/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 1
    row = body["results"][0]
    assert set(row) == SESSION_FIELDS
    assert row["id"] == str(session.pk)
    assert row["status"] == "PENDING"
    assert row["definition_id"] == str(session.definition_id)
    assert row["end_reason"] is None


def test_list_filters(instructor_api, definition):
    worker = WorkerFactory()
    running = SessionFactory(definition=definition, status="RUNNING", worker=worker, owner="alice")
    ready = SessionFactory(status="READY", owner="bob", reservation_id="r-1")
    SessionFactory(status="PENDING", owner="carol")

    def ids(query):
        response = instructor_api.get(f"/api/v1/sessions/?{query}")
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids("status=running,Ready") == {str(running.pk), str(ready.pk)}
    assert ids("owner=alice") == {str(running.pk)}
    assert ids(f"definition={definition.pk}") == {str(running.pk)}
    assert ids(f"worker={worker.pk}") == {str(running.pk)}
    assert ids("reservation_id=r-1") == {str(ready.pk)}
    later = iso(timezone.now() + timedelta(days=2))
    assert ids(f"from={later}") == set()
    assert len(ids(f"to={later}")) == 3


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=RUNNING,BOGUS", "status"),
        ("definition=not-a-uuid", "definition"),
        ("from=yesterday", "from"),
        ("to=2026-02-30T00:00:00Z", "to"),
        ("to=0001-01-01T00:00:00%2B14:00", "to"),
        ("page_size=0", "page_size"),
        ("page_size=501", "page_size"),
        ("page=abc", "page"),
        ("status=%25s%25n", "status"),
    ],
)
def test_list_bad_query_is_400_naming_the_parameter(instructor_api, query, field):
    assert_field_error(instructor_api.get(f"/api/v1/sessions/?{query}"), field)


def test_list_offsets_beyond_postgres_are_normalised(instructor_api, session):
    # Python accepts a -20:53 offset, PostgreSQL does not: the API moves it to UTC first.
    response = instructor_api.get("/api/v1/sessions/?to=2999-07-30T12:19:22-20:53")
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_list_page_past_the_end_is_404(instructor_api, session):
    response = instructor_api.get("/api/v1/sessions/?page=9")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_list_page_size_up_to_500(instructor_api, definition):
    SessionFactory.create_batch(3, definition=definition)
    body = instructor_api.get("/api/v1/sessions/?page_size=2&page=2").json()
    assert body["count"] == 3 and len(body["results"]) == 1 and body["previous"] and body["next"] is None
    assert instructor_api.get("/api/v1/sessions/?page_size=500").status_code == 200


def test_list_needs_credentials_and_a_role(anon_api, nobody_api, session):
    response = anon_api.get("/api/v1/sessions/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    assert nobody_api.get("/api/v1/sessions/").status_code == 403


def test_detail(instructor_api, session):
    response = instructor_api.get(f"/api/v1/sessions/{session.pk}/")
    assert response.status_code == 200
    assert response.json()["id"] == str(session.pk)


@pytest.mark.parametrize("pk", [UNKNOWN, "not-a-uuid", "a.b"])
def test_detail_unknown_is_404(instructor_api, pk):
    response = instructor_api.get(f"/api/v1/sessions/{pk}/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_detail_auth(anon_api, nobody_api, session):
    assert anon_api.get(f"/api/v1/sessions/{session.pk}/").status_code == 401
    assert nobody_api.get(f"/api/v1/sessions/{session.pk}/").status_code == 403


# ---------------------------------------------------------------------------------------
# Create
# ---------------------------------------------------------------------------------------


def test_create_asap(instructor_api, definition):
    response = instructor_api.post("/api/v1/sessions/", {"definition_id": str(definition.pk), "owner": "cand-1"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["owner"] == "cand-1"
    assert body["created_by"] == "api-instructor"
    assert response["Location"] == f"/api/v1/sessions/{body['id']}/"
    session = LabletSession.objects.get(pk=body["id"])
    assert session.timeslot_end - session.timeslot_start == timedelta(minutes=definition.max_duration_minutes)
    assert session.history.get().actor == "api-instructor"


def test_create_with_timeslot_and_reservation(instructor_api, definition):
    start = timezone.now() + timedelta(hours=1)
    response = instructor_api.post(
        "/api/v1/sessions/",
        {
            "definition_id": str(definition.pk),
            "owner": "cand-2",
            "timeslot_start": start.isoformat(),
            "timeslot_end": (start + timedelta(minutes=30)).isoformat(),
            "reservation_id": "ext-42",
        },
    )
    assert response.status_code == 201, response.content
    assert response.json()["reservation_id"] == "ext-42"


def test_create_duplicate_reservation_is_409_with_the_existing_id(instructor_api, definition):
    body = {"definition_id": str(definition.pk), "owner": "cand-3", "reservation_id": "ext-dup"}
    first = instructor_api.post("/api/v1/sessions/", body)
    assert first.status_code == 201
    again = instructor_api.post("/api/v1/sessions/", body)
    assert again.status_code == 409
    conflict = again.json()
    assert conflict["code"] == "conflict"
    assert conflict["existing_id"] == first.json()["id"]
    assert conflict["field"] == "reservation_id"
    assert LabletSession.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"owner": "x"}, "definition_id"),
        ({"definition_id": "nope", "owner": "x"}, "definition_id"),
        ({"definition_id": str(UNKNOWN), "owner": "x"}, "definition_id"),
        ({"definition_id": "{definition}"}, "owner"),
        ({"definition_id": "{definition}", "owner": "x" * 201}, "owner"),
        ({"definition_id": "{definition}", "owner": "x", "timeslot_start": "2030-01-01T09:00:00"}, "timeslot_start"),
        ({"definition_id": "{definition}", "owner": "x", "timeslot_start": "2000-01-01T09:00:00Z"}, "timeslot_start"),
        (
            {"definition_id": "{definition}", "owner": "x", "timeslot_start": "0001-01-01T00:00:00+14:00"},
            "timeslot_start",
        ),
        (
            {"definition_id": "{definition}", "owner": "x", "timeslot_start": "{soon}", "timeslot_end": "{soon}"},
            "timeslot_end",
        ),
        ({"definition_id": "{definition}", "owner": "x", "timeslot_end": "{far}"}, "timeslot_end"),
        ({"definition_id": "{definition}", "owner": "x\u0000"}, "owner"),
    ],
)
def test_create_bad_input_is_400_naming_the_field(instructor_api, definition, body, field):
    soon = (timezone.now() + timedelta(hours=1)).isoformat()
    far = (timezone.now() + timedelta(days=3)).isoformat()
    filled = {
        k: v.format(definition=definition.pk, soon=soon, far=far) if isinstance(v, str) and "{" in v else v
        for k, v in body.items()
    }
    assert_field_error(instructor_api.post("/api/v1/sessions/", filled), field)
    assert LabletSession.objects.count() == 0


def test_create_on_an_inactive_definition_is_400(instructor_api):
    inactive = DefinitionFactory(status="INACTIVE")
    response = instructor_api.post("/api/v1/sessions/", {"definition_id": str(inactive.pk), "owner": "x"})
    assert "INACTIVE" in assert_field_error(response, "definition_id")["definition_id"][0]


def test_create_malformed_json_is_400(instructor_api):
    response = instructor_api.post("/api/v1/sessions/", "{not json", content_type="application/json")
    assert_field_error(response, "non_field_errors")


def test_create_non_object_body_is_400(instructor_api):
    assert_field_error(instructor_api.post("/api/v1/sessions/", [1, 2]), "non_field_errors")


def test_create_auth(anon_api, nobody_api, definition):
    body = {"definition_id": str(definition.pk), "owner": "x"}
    assert anon_api.post("/api/v1/sessions/", body).status_code == 401
    assert nobody_api.post("/api/v1/sessions/", body).status_code == 403


# ---------------------------------------------------------------------------------------
# Terminate
# ---------------------------------------------------------------------------------------


def test_delete_terminates_with_reason(instructor_api, session):
    response = instructor_api.delete(f"/api/v1/sessions/{session.pk}/", {"reason": "candidate left"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "TERMINATED"
    assert body["end_reason"] == "TERMINATED"
    change = SessionStatusChange.objects.filter(session=session).latest("id")
    assert (change.to_status, change.reason, change.actor) == ("TERMINATED", "candidate left", "api-instructor")
    assert change.request_id == response["X-Request-ID"]


def test_delete_reason_in_query(instructor_api, session):
    response = instructor_api.delete(f"/api/v1/sessions/{session.pk}/?reason=by+query")
    assert response.status_code == 200
    assert SessionStatusChange.objects.filter(session=session).latest("id").reason == "by query"


def test_delete_twice_is_409(instructor_api, session):
    instructor_api.delete(f"/api/v1/sessions/{session.pk}/")
    assert_conflict(instructor_api.delete(f"/api/v1/sessions/{session.pk}/"), "TERMINATED", [])


def test_delete_of_an_archived_session_is_409_and_keeps_how_it_ended(instructor_api, definition):
    archived = SessionFactory(definition=definition, status="ARCHIVED", end_reason="COMPLETED")
    assert_conflict(instructor_api.delete(f"/api/v1/sessions/{archived.pk}/"), "ARCHIVED", [])
    archived.refresh_from_db()
    assert (archived.status, archived.end_reason) == ("ARCHIVED", "COMPLETED")


def test_delete_errors(instructor_api, anon_api, nobody_api, session):
    assert_field_error(instructor_api.delete(f"/api/v1/sessions/{session.pk}/", {"reason": "x" * 2001}), "reason")
    assert instructor_api.delete(f"/api/v1/sessions/{UNKNOWN}/").status_code == 404
    assert anon_api.delete(f"/api/v1/sessions/{session.pk}/").status_code == 401
    assert nobody_api.delete(f"/api/v1/sessions/{session.pk}/").status_code == 403
    session.refresh_from_db()
    assert session.status == "PENDING"


# ---------------------------------------------------------------------------------------
# Transition
# ---------------------------------------------------------------------------------------


def test_transition_ready_to_running(instructor_api):
    session = SessionFactory(status="READY", worker=WorkerFactory())
    response = instructor_api.post(f"/api/v1/sessions/{session.pk}/transition", {"status": "running", "reason": "go"})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "RUNNING"
    assert response.json()["started_at"]


def test_transition_to_grading_creates_the_grading_session(instructor_api):
    session = SessionFactory(status="COLLECTING", worker=WorkerFactory())
    response = instructor_api.post(f"/api/v1/sessions/{session.pk}/transition", {"status": "GRADING"})
    assert response.status_code == 200
    assert instructor_api.get(f"/api/v1/sessions/{session.pk}/grading-session").status_code == 200


def test_transition_refused_is_409_with_current_and_allowed(instructor_api, session):
    response = instructor_api.post(f"/api/v1/sessions/{session.pk}/transition", {"status": "RUNNING"})
    assert_conflict(response, "PENDING", ["EXPIRED", "SCHEDULED", "TERMINATED"])


def test_transition_expected_status_mismatch_is_409(instructor_api):
    session = SessionFactory(status="READY")
    response = instructor_api.post(
        f"/api/v1/sessions/{session.pk}/transition", {"status": "RUNNING", "expected_status": "running"}
    )
    assert_conflict(response, "READY")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "status"),
        ({"status": "TERMINATED"}, "status"),
        ({"status": "SCHEDULED"}, "status"),
        ({"status": "FLYING"}, "status"),
        ({"status": "RUNNING", "expected_status": "FLYING"}, "expected_status"),
        ({"status": "RUNNING", "reason": "x" * 2001}, "reason"),
    ],
)
def test_transition_bad_input_is_400(instructor_api, session, body, field):
    assert_field_error(instructor_api.post(f"/api/v1/sessions/{session.pk}/transition", body), field)


def test_transition_auth_and_404(instructor_api, anon_api, nobody_api, session):
    body = {"status": "RUNNING"}
    assert instructor_api.post(f"/api/v1/sessions/{UNKNOWN}/transition", body).status_code == 404
    assert anon_api.post(f"/api/v1/sessions/{session.pk}/transition", body).status_code == 401
    assert nobody_api.post(f"/api/v1/sessions/{session.pk}/transition", body).status_code == 403


# ---------------------------------------------------------------------------------------
# Extend and requeue
# ---------------------------------------------------------------------------------------


def test_extend(instructor_api):
    start = timezone.now() + timedelta(minutes=5)
    session = SessionFactory(timeslot_start=start, timeslot_end=start + timedelta(minutes=30))
    new_end = start + timedelta(minutes=50)
    response = instructor_api.post(f"/api/v1/sessions/{session.pk}/extend", {"timeslot_end": new_end.isoformat()})
    assert response.status_code == 200, response.content
    session.refresh_from_db()
    assert session.timeslot_end == new_end


def test_extend_beyond_the_instructor_ceiling_only_for_admins_with_a_reason(instructor_api, admin_api):
    start = timezone.now() + timedelta(minutes=5)
    session = SessionFactory(timeslot_start=start, timeslot_end=start + timedelta(minutes=30))
    url = f"/api/v1/sessions/{session.pk}/extend"
    # The ceiling: the definition's 60 minutes + SystemSettings.max_extension_minutes (30 by default).
    assert instructor_api.post(url, {"timeslot_end": (start + timedelta(minutes=90)).isoformat()}).status_code == 200
    body = {"timeslot_end": (start + timedelta(minutes=120)).isoformat()}
    refused = assert_field_error(instructor_api.post(url, body), "timeslot_end")
    assert "at most 90" in str(refused)
    assert_field_error(admin_api.post(url, body), "reason")
    assert admin_api.post(url, {**body, "reason": "medical"}).status_code == 200


@pytest.mark.parametrize("end", ["missing", "not a date", "earlier", "2030-01-01T00:00:00"])
def test_extend_bad_end_is_400(instructor_api, session, end):
    if end == "earlier":
        end = (session.timeslot_end - timedelta(minutes=1)).isoformat()
    body = {} if end == "missing" else {"timeslot_end": end}
    assert_field_error(instructor_api.post(f"/api/v1/sessions/{session.pk}/extend", body), "timeslot_end")


def test_extend_a_finished_session_is_409(instructor_api):
    session = SessionFactory(status="ARCHIVED")
    end = (session.timeslot_end + timedelta(minutes=10)).isoformat()
    assert_conflict(instructor_api.post(f"/api/v1/sessions/{session.pk}/extend", {"timeslot_end": end}), "ARCHIVED")


def test_extend_auth_and_404(instructor_api, anon_api, nobody_api, session):
    body = {"timeslot_end": (session.timeslot_end + timedelta(minutes=5)).isoformat()}
    assert instructor_api.post(f"/api/v1/sessions/{UNKNOWN}/extend", body).status_code == 404
    assert anon_api.post(f"/api/v1/sessions/{session.pk}/extend", body).status_code == 401
    assert nobody_api.post(f"/api/v1/sessions/{session.pk}/extend", body).status_code == 403


def test_requeue_scheduled_goes_back_to_pending(instructor_api):
    session = SessionFactory(status="SCHEDULED", worker=WorkerFactory())
    response = instructor_api.post(f"/api/v1/sessions/{session.pk}/requeue", {"reason": "worker lost"})
    assert response.status_code == 200
    assert response.json()["status"] == "PENDING"
    assert response.json()["worker_id"] is None


def test_requeue_other_active_session_is_a_nudge(instructor_api):
    session = SessionFactory(status="INSTANTIATING", attempts=3, last_error="boom")
    response = instructor_api.post(f"/api/v1/sessions/{session.pk}/requeue")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["attempts"]) == ("INSTANTIATING", 0)


def test_requeue_errors(instructor_api, anon_api, nobody_api):
    terminated = SessionFactory(status="TERMINATED")
    assert_conflict(instructor_api.post(f"/api/v1/sessions/{terminated.pk}/requeue"), "TERMINATED")
    assert_field_error(
        instructor_api.post(f"/api/v1/sessions/{terminated.pk}/requeue", {"reason": "x" * 2001}), "reason"
    )
    assert instructor_api.post(f"/api/v1/sessions/{UNKNOWN}/requeue").status_code == 404
    assert anon_api.post(f"/api/v1/sessions/{terminated.pk}/requeue").status_code == 401
    assert nobody_api.post(f"/api/v1/sessions/{terminated.pk}/requeue").status_code == 403


# ---------------------------------------------------------------------------------------
# Children and history
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("child", ["user-session", "grading-session", "score-report"])
def test_children_are_404_until_they_exist(instructor_api, session, child):
    response = instructor_api.get(f"/api/v1/sessions/{session.pk}/{child}")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_children(instructor_api, session):
    UserSessionFactory(lablet_session=session, devices=[{"label": "r1", "protocol": "ssh", "host": "h", "port": 1}])
    grading = GradingSessionFactory(lablet_session=session)
    report = ScoreReportFactory(lablet_session=session, grading_session=grading)
    report.sections.create(name="routing", score=8, max_score=10)
    user_session = instructor_api.get(f"/api/v1/sessions/{session.pk}/user-session").json()
    assert user_session["login_url"] == "https://lds.example.test/login/abc"
    assert user_session["devices"][0]["label"] == "r1"
    assert instructor_api.get(f"/api/v1/sessions/{session.pk}/grading-session").json()["id"] == str(grading.pk)
    score = instructor_api.get(f"/api/v1/sessions/{session.pk}/score-report").json()
    assert (score["score"], score["passed"], score["sections"][0]["name"]) == (80.0, True, "routing")


@pytest.mark.parametrize("child", ["user-session", "grading-session", "score-report", "history"])
def test_children_auth_and_unknown_session(instructor_api, anon_api, nobody_api, session, child):
    assert instructor_api.get(f"/api/v1/sessions/{UNKNOWN}/{child}").status_code == 404
    assert anon_api.get(f"/api/v1/sessions/{session.pk}/{child}").status_code == 401
    assert nobody_api.get(f"/api/v1/sessions/{session.pk}/{child}").status_code == 403


def test_history_is_a_page_oldest_first(instructor_api, definition):
    response = instructor_api.post("/api/v1/sessions/", {"definition_id": str(definition.pk), "owner": "h"})
    pk = response.json()["id"]
    instructor_api.delete(f"/api/v1/sessions/{pk}/", {"reason": "done"})
    history = instructor_api.get(f"/api/v1/sessions/{pk}/history").json()
    assert history["count"] == 2
    assert [row["to_status"] for row in history["results"]] == ["PENDING", "TERMINATED"]
    assert history["results"][0]["from_status"] is None
    assert_field_error(instructor_api.get(f"/api/v1/sessions/{pk}/history?page_size=x"), "page_size")
    assert instructor_api.get(f"/api/v1/sessions/{pk}/history?page=3").status_code == 404


# ---------------------------------------------------------------------------------------
# The hand-built representation
# ---------------------------------------------------------------------------------------


def test_fast_representation_equals_drf_generic_rendering(definition):
    from rest_framework import serializers

    from sessions.api.serializers import SessionSerializer
    from sessions.api.views import session_rows

    worker = WorkerFactory()
    now = timezone.now()
    SessionFactory(definition=definition)
    SessionFactory(
        definition=definition,
        status="STOPPED",
        worker=worker,
        reservation_id="r-9",
        allocated_ports={"a_vnc": 2001},
        scheduled_at=now,
        started_at=now,
        ended_at=now,
        duration_seconds=0,
        end_reason="COMPLETED",
        grade_result="PASS",
        cml_lab_id="lab-1",
        next_attempt_at=now,
    )
    for session in session_rows():
        bound = SessionSerializer(session)
        generic = serializers.Serializer.to_representation(bound, session)
        assert bound.data == generic
        assert list(bound.data) == list(generic)
