"""`/api/internal/…` (SPEC §5.1): `X-API-Key` only, any allowed transition, the children written by controllers."""

import uuid

import pytest
from rest_framework.test import APIClient

from grading.models import ScoreReport
from sessions.models import SessionStatusChange, UserSession
from tests.api.conftest import INTERNAL_KEY, assert_conflict, assert_field_error
from tests.factories import GradingSessionFactory, SessionFactory, UserSessionFactory, WorkerFactory

pytestmark = pytest.mark.django_db
UNKNOWN = uuid.uuid4()


def key_client(key):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


@pytest.mark.parametrize("path", ["/api/internal/sessions/", "/api/internal/sessions/{pk}/"])
def test_key_is_required_and_checked(path, session, admin_api):
    url = path.format(pk=session.pk)
    missing = APIClient().get(url)
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'
    assert key_client("wrong").get(url).status_code == 401
    assert key_client(INTERNAL_KEY + "x").get(url).status_code == 401
    assert key_client("").get(url).status_code == 401
    # A user token, even an admin's, is not the internal key.
    assert admin_api.get(url).status_code == 401
    assert key_client(INTERNAL_KEY).get(url).status_code == 200


def test_key_refused_on_every_write(session, settings):
    settings.AXES_FAILURE_LIMIT = 100  # six wrong keys from one address: the lockout is tests/lcm/test_throttling.py's
    for verb in ("schedule", "transition", "ready", "user-session", "grading-session", "score-report"):
        assert key_client("wrong").post(f"/api/internal/sessions/{session.pk}/{verb}", {}).status_code == 401
        assert APIClient().post(f"/api/internal/sessions/{session.pk}/{verb}", {}).status_code == 401


def test_an_empty_configured_key_accepts_nothing(settings, session):
    settings.INTERNAL_API_KEY = ""
    assert key_client("").get("/api/internal/sessions/").status_code == 401


def test_list_and_detail(internal_api, session):
    assert internal_api.get("/api/internal/sessions/?status=pending").json()["count"] == 1
    assert_field_error(internal_api.get("/api/internal/sessions/?status=nope"), "status")
    assert internal_api.get("/api/internal/sessions/?page=2").status_code == 404
    assert internal_api.get(f"/api/internal/sessions/{session.pk}/").json()["id"] == str(session.pk)
    assert internal_api.get(f"/api/internal/sessions/{UNKNOWN}/").status_code == 404


def test_schedule(internal_api, session, worker):
    response = internal_api.post(f"/api/internal/sessions/{session.pk}/schedule", {"worker_id": str(worker.pk)})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["worker_id"]) == ("SCHEDULED", str(worker.pk))
    assert SessionStatusChange.objects.filter(session=session).latest("id").actor == "internal-api"


def test_schedule_errors(internal_api, session):
    assert_field_error(internal_api.post(f"/api/internal/sessions/{session.pk}/schedule", {}), "worker_id")
    unknown = {"worker_id": str(UNKNOWN)}
    assert_field_error(internal_api.post(f"/api/internal/sessions/{session.pk}/schedule", unknown), "worker_id")
    stopped = {"worker_id": str(WorkerFactory(status="STOPPED").pk)}
    assert_conflict(internal_api.post(f"/api/internal/sessions/{session.pk}/schedule", stopped), "PENDING")
    assert internal_api.post(f"/api/internal/sessions/{UNKNOWN}/schedule", stopped).status_code == 404


def test_transition_any_allowed_target(internal_api):
    session = SessionFactory(status="SCHEDULED", worker=WorkerFactory())
    response = internal_api.post(f"/api/internal/sessions/{session.pk}/transition", {"status": "instantiating"})
    assert response.status_code == 200 and response.json()["status"] == "INSTANTIATING"
    failed = internal_api.post(
        f"/api/internal/sessions/{session.pk}/transition",
        {"status": "TERMINATED", "end_reason": "failed", "reason": "import failed 8 times"},
    )
    assert failed.status_code == 200
    assert (failed.json()["end_reason"], failed.json()["end_reason_detail"]) == ("FAILED", "import failed 8 times")


def test_transition_errors(internal_api, session):
    url = f"/api/internal/sessions/{session.pk}/transition"
    assert_field_error(internal_api.post(url, {"status": "LOST"}), "status")
    assert_field_error(internal_api.post(url, {"status": "EXPIRED", "end_reason": "BORED"}), "end_reason")
    assert_conflict(internal_api.post(url, {"status": "RUNNING"}), "PENDING", ["EXPIRED", "SCHEDULED", "TERMINATED"])
    assert_conflict(internal_api.post(url, {"status": "SCHEDULED"}), "PENDING")  # needs a worker: /schedule
    assert internal_api.post(f"/api/internal/sessions/{UNKNOWN}/transition", {"status": "EXPIRED"}).status_code == 404


def test_ready_creates_the_user_session_in_the_same_step(internal_api):
    session = SessionFactory(status="INSTANTIATING", worker=WorkerFactory())
    response = internal_api.post(
        f"/api/internal/sessions/{session.pk}/ready",
        {
            "user_session": {
                "lds_session_id": "lds-1",
                "login_url": "https://lds.test/l/1",
                "devices": [{"label": "r1", "protocol": "ssh", "host": "10.0.0.1", "port": 2001}],
                "status": "provisioned",
            }
        },
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "READY"
    user_session = UserSession.objects.get(lablet_session=session)
    assert (user_session.status, user_session.devices[0]["port"]) == ("PROVISIONED", 2001)


def test_ready_errors(internal_api):
    session = SessionFactory(status="INSTANTIATING")
    url = f"/api/internal/sessions/{session.pk}/ready"
    assert_conflict(internal_api.post(url, {}), "INSTANTIATING")  # READY needs a UserSession
    assert_field_error(internal_api.post(url, {"user_session": {"login_url": "nope"}}), "user_session.login_url")
    assert_conflict(internal_api.post(url, {"user_session": {}, "expected_status": "READY"}), "INSTANTIATING")
    assert not UserSession.objects.exists()
    assert internal_api.post(f"/api/internal/sessions/{UNKNOWN}/ready", {}).status_code == 404


def test_user_session_create_then_update(internal_api, session):
    url = f"/api/internal/sessions/{session.pk}/user-session"
    created = internal_api.post(url, {"lds_session_id": "lds-9", "status": "PROVISIONING"})
    assert created.status_code == 201, created.content
    assert created.json()["lds_session_id"] == "lds-9"
    updated = internal_api.post(url, {"status": "provisioned", "login_url": "https://lds.test/x"})
    assert updated.status_code == 200
    assert (updated.json()["id"], updated.json()["status"]) == (created.json()["id"], "PROVISIONED")
    assert_conflict(internal_api.post(url, {"status": "PROVISIONING"}), "PROVISIONED", ["ACTIVE", "FAULTED"])


def test_user_session_errors(internal_api, session):
    url = f"/api/internal/sessions/{session.pk}/user-session"
    assert_field_error(internal_api.post(url, {"devices": [{"label": "a\u0000b"}]}), "devices")
    assert_field_error(internal_api.post(url, {"devices": "r1"}), "devices")
    assert_field_error(internal_api.post(url, {"status": "ASLEEP"}), "status")
    assert internal_api.post(f"/api/internal/sessions/{UNKNOWN}/user-session", {}).status_code == 404


def test_grading_session_create_then_update(internal_api, session):
    url = f"/api/internal/sessions/{session.pk}/grading-session"
    created = internal_api.post(url, {"grading_session_id": "ge-1", "status": "COLLECTING"})
    assert created.status_code == 201, created.content
    assert (created.json()["grading_session_id"], created.json()["status"]) == ("ge-1", "COLLECTING")
    updated = internal_api.post(url, {"status": "grading", "pod_id": "pod-3"})
    assert (updated.status_code, updated.json()["pod_id"]) == (200, "pod-3")
    assert_conflict(internal_api.post(url, {"status": "PENDING"}), "GRADING")  # forward only


def test_grading_session_errors(internal_api, session):
    url = f"/api/internal/sessions/{session.pk}/grading-session"
    assert_field_error(internal_api.post(url, {"status": "DONE"}), "status")
    assert_field_error(internal_api.post(url, {"pod_id": "x" * 201}), "pod_id")
    assert internal_api.post(f"/api/internal/sessions/{UNKNOWN}/grading-session", {}).status_code == 404


def test_score_report(internal_api, session):
    grading = GradingSessionFactory(lablet_session=session)
    response = internal_api.post(
        f"/api/internal/sessions/{session.pk}/score-report",
        {
            "score": 83.333,
            "max_score": 100,
            "cut_score": 70,
            "sections": [{"name": "ospf", "score": 8, "max_score": 10}],
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["score"], body["passed"], body["grading_session_id"]) == (83.33, True, str(grading.pk))
    session.refresh_from_db()
    assert session.grade_result == "PASS"


def test_score_report_errors(internal_api, session):
    url = f"/api/internal/sessions/{session.pk}/score-report"
    assert_field_error(internal_api.post(url, {"score": 120, "max_score": 100, "cut_score": 70}), "score")
    assert_field_error(internal_api.post(url, {"max_score": 100, "cut_score": 70}), "score")
    assert_field_error(
        internal_api.post(url, {"score": 1, "max_score": 10, "cut_score": 5, "sections": [{"score": 1}]}),
        "sections[0].name",
    )
    other = GradingSessionFactory(lablet_session=UserSessionFactory().lablet_session)
    body = {"score": 1, "max_score": 10, "cut_score": 5, "grading_session_id": str(other.pk)}
    assert_field_error(internal_api.post(url, body), "grading_session_id")
    assert internal_api.post(f"/api/internal/sessions/{UNKNOWN}/score-report", body).status_code == 404
    assert not ScoreReport.objects.exists()
