"""Limits at the door (SPEC §12): input LCM cannot store sensibly is a 4xx naming what is wrong, never a 500,
and nothing stored may make a page or endpoint fail later."""

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from grading.models import ScoreReport
from sessions.booking import BOOKING_HORIZON
from sessions.models import UserSession
from sessions.services import user_session_create, user_session_update
from tests.api.conftest import assert_conflict, assert_field_error
from tests.factories import DefinitionFactory, SessionFactory, UserSessionFactory
from tests.support.commands import fails

pytestmark = pytest.mark.django_db

FAR = "9999-12-31T23:00:00Z"
WEBHOOK_HEADERS = {"X-LCM-Webhook-Secret": "local-webhook-secret"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- dates LCM cannot represent ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"timeslot_start": FAR},
        {"timeslot_start": "9999-12-31T23:30:00Z", "timeslot_end": "9999-12-31T23:59:59Z"},
        {"timeslot_start": "9999-12-31T23:59:59-05:00"},
        {"timeslot_end": FAR},
    ],
)
def test_booking_near_the_end_of_time_is_400(instructor_api, body):
    definition = DefinitionFactory()
    response = instructor_api.post("/api/v1/sessions/", {"definition_id": str(definition.pk), "owner": "a", **body})
    assert response.status_code == 400, response.content
    assert set(response.json()) & {"timeslot_start", "timeslot_end"}


def test_booking_beyond_the_horizon_is_400_naming_the_field(instructor_api):
    definition = DefinitionFactory()
    start = timezone.now() + BOOKING_HORIZON + timedelta(days=1)
    body = {"definition_id": str(definition.pk), "owner": "a", "timeslot_start": start.isoformat()}
    assert_field_error(instructor_api.post("/api/v1/sessions/", body), "timeslot_start")
    # Within the horizon is fine.
    body["timeslot_start"] = (timezone.now() + timedelta(days=30)).isoformat()
    assert instructor_api.post("/api/v1/sessions/", body).status_code == 201


def test_extending_to_the_end_of_time_is_400_and_the_session_stays_readable(admin_api):
    session = SessionFactory()
    url = f"/api/v1/sessions/{session.pk}/extend"
    response = admin_api.post(url, {"timeslot_end": "9999-12-31T23:59:59Z", "reason": "forever"})
    assert_field_error(response, "timeslot_end")
    beyond = timezone.now() + BOOKING_HORIZON + timedelta(days=1)
    assert_field_error(admin_api.post(url, {"timeslot_end": beyond.isoformat(), "reason": "x"}), "timeslot_end")
    assert admin_api.get(f"/api/v1/sessions/{session.pk}/").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "from=9999-12-31T23:59:59-05:00",
        "to=0001-01-01T00:00:00%2B05:00",
        "from=9999-12-31T23:59:59Z&to=9999-12-31T23:59:59Z",
    ],
)
def test_date_filters_at_the_edges_never_500(instructor_api, query):
    SessionFactory()
    response = instructor_api.get(f"/api/v1/sessions/?{query}")
    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert set(response.json()) & {"from", "from_", "to"}


# -- the same dates through the pages and the commands ---------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["date=9999-12-31", "date=0001-01-01", "from=9999-12-31T23:59:59-05:00", "to=0001-01-01T00:00:00%2B05:00"],
)
def test_session_list_page_filters_at_the_edges_never_500(admin_client, query):
    SessionFactory()
    assert admin_client.get(f"/sessions/?{query}").status_code == 200


def test_booking_form_near_the_end_of_time_is_a_form_error(admin_client):
    definition = DefinitionFactory()
    data = {"definition": definition.pk, "owner": "a", "when": "at", "timeslot_start": "9999-12-31T23:00"}
    response = admin_client.post("/sessions/", data)
    assert response.status_code == 422
    assert response.context["form"].errors["timeslot_start"]


def test_commands_refuse_dates_beyond_the_horizon():
    definition = DefinitionFactory()
    message = fails("session_create", "--definition", str(definition.pk), "--owner", "a", "--start", FAR)
    assert "timeslot_start" in message
    session = SessionFactory()
    message = fails("session_extend", str(session.pk), "--to", "9999-12-31T23:59:59Z", "--reason", "forever")
    assert "timeslot_end" in message
    session.refresh_from_db()
    assert session.timeslot_end.year < 9999


# -- bodies: depth and size ------------------------------------------------------------------------


def test_deeply_nested_json_is_400_on_the_rest_api(instructor_api):
    response = instructor_api.generic("POST", "/api/v1/sessions/", nested(5000), content_type="application/json")
    assert response.status_code == 400, response.content
    assert "non_field_errors" in response.json()


def test_a_body_over_the_limit_is_413_on_the_rest_api(instructor_api, settings):
    body = json.dumps({"owner": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)})
    response = instructor_api.generic("POST", "/api/v1/sessions/", body, content_type="application/json")
    assert response.status_code == 413, response.content
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()


def test_deeply_nested_json_is_400_on_the_webhook(client):
    for content_type, headers in (
        ("application/cloudevents+json", WEBHOOK_HEADERS),
        (
            "application/json",
            {**WEBHOOK_HEADERS, "ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-source": "/s"},
        ),
    ):
        response = client.post("/api/events", data=nested(5000), content_type=content_type, headers=headers)
        assert response.status_code == 400, response.content
        assert response.json()


def test_a_body_over_the_limit_is_413_on_the_webhook(client):
    body = json.dumps({"specversion": "1.0", "data": "x" * 2_700_000})
    response = client.post("/api/events", data=body, content_type="application/json", headers=WEBHOOK_HEADERS)
    assert response.status_code == 413, response.content
    assert "detail" in response.json()


def test_a_body_between_the_webhook_limit_and_djangos_is_413(client):
    body = json.dumps({"specversion": "1.0", "data": "x" * 1_100_000})
    response = client.post("/api/events", data=body, content_type="application/json", headers=WEBHOOK_HEADERS)
    assert response.status_code == 413, response.content


def test_json_depth_is_measured_without_recursion():
    from lcm.api.parsers import MAX_JSON_DEPTH, JsonTooDeep, json_depth, load_json

    assert json_depth(1) == 0
    assert json_depth([{"a": [1]}]) == 3
    assert load_json(nested(MAX_JSON_DEPTH)) is not None
    with pytest.raises(JsonTooDeep):
        load_json(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(JsonTooDeep):
        load_json(nested(100_000))


def test_the_parser_reads_no_more_than_the_limit_from_a_stream(settings):
    from io import BytesIO

    from rest_framework.exceptions import ParseError

    from lcm.api.parsers import LimitedJSONParser, RequestTooLarge

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    parser = LimitedJSONParser()
    assert parser.parse(BytesIO(b'{"a": [1, 2]}')) == {"a": [1, 2]}
    with pytest.raises(RequestTooLarge):
        parser.parse(BytesIO(b"[" + b"1," * 600 + b"1]"))
    with pytest.raises(ParseError):
        parser.parse(BytesIO(b"[NaN]"))
    with pytest.raises(ParseError):
        parser.parse(BytesIO(nested(99).encode()))


def test_json_nested_just_over_the_limit_is_400_naming_the_limit(instructor_api):
    from lcm.api.parsers import MAX_JSON_DEPTH

    body = json.dumps({"definition_id": "x", "owner": json.loads(nested(MAX_JSON_DEPTH))})
    response = instructor_api.generic("POST", "/api/v1/sessions/", body, content_type="application/json")
    assert response.status_code == 400
    assert "deeper than" in response.json()["non_field_errors"][0]


# -- devices and login URLs of a user session ------------------------------------------------------


DEVICE = {"label": "r1", "protocol": "ssh", "host": "10.0.0.1", "port": 22}


@pytest.mark.parametrize(
    "devices",
    [
        [{**DEVICE, "label": json.loads(nested(60))}],
        [{"label": "r1", "nested": [[[]]]}],
        [{**DEVICE, "port": {"a": 1}}],
        [{**DEVICE, "label": "x" * 10_000}],
        [{**DEVICE, "port": 70_000}],
        [DEVICE] * 1001,
        "not a list",
    ],
)
def test_user_session_devices_must_be_flat_device_objects(internal_api, devices):
    session = SessionFactory()
    url = f"/api/internal/sessions/{session.pk}/user-session"
    response = internal_api.post(url, {"devices": devices}, format="json")
    assert response.status_code == 400, response.content[:300]
    assert any(key.startswith("devices") for key in response.json()), response.json()
    assert not UserSession.objects.exists()


def test_devices_nested_beyond_the_parser_limit_are_400(internal_api):
    session = SessionFactory()
    body = json.dumps({"devices": [{"label": json.loads(nested(900))}]})
    response = internal_api.generic(
        "POST", f"/api/internal/sessions/{session.pk}/user-session", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert not UserSession.objects.exists()


def test_devices_are_checked_by_the_service_too():
    with pytest.raises(ValidationError) as error:
        user_session_create(SessionFactory(), actor="test", devices=[{"label": [[["deep"]]]}])
    assert "devices" in error.value.message_dict
    with pytest.raises(ValidationError):
        user_session_update(UserSessionFactory(), actor="test", devices=[{**DEVICE, "port": True}])


def test_valid_devices_are_stored(internal_api):
    session = SessionFactory()
    url = f"/api/internal/sessions/{session.pk}/user-session"
    response = internal_api.post(url, {"devices": [DEVICE, {"label": "console"}]}, format="json")
    assert response.status_code == 201, response.content
    assert internal_api.get(f"/api/internal/sessions/{session.pk}/").status_code == 200


@pytest.mark.parametrize(
    "login_url",
    ["javascript:alert(1)", "javascript://example.com/%0aalert(1)", "ftp://example.com/x", "data:text/html,hi"],
)
def test_login_url_must_be_http(internal_api, login_url):
    user_session = UserSessionFactory()
    url = f"/api/internal/sessions/{user_session.lablet_session_id}/user-session"
    assert_field_error(internal_api.post(url, {"login_url": login_url}, format="json"), "login_url")
    user_session.refresh_from_db()
    assert not user_session.login_url.startswith(("javascript", "ftp", "data"))


def test_login_url_is_checked_by_the_service_too():
    with pytest.raises(ValidationError) as error:
        user_session_create(SessionFactory(), actor="test", login_url="javascript:alert(1)")
    assert "login_url" in error.value.message_dict
    with pytest.raises(ValidationError):
        user_session_update(UserSessionFactory(), actor="test", login_url="javascript:alert(1)")


# -- writes to finished sessions ---------------------------------------------------------------------


@pytest.mark.parametrize("status", ["TERMINATED", "ARCHIVED", "EXPIRED"])
def test_score_reports_for_finished_sessions_are_409(internal_api, status):
    session = SessionFactory(status=status)
    response = internal_api.post(
        f"/api/internal/sessions/{session.pk}/score-report",
        {"score": 80, "max_score": 100, "cut_score": 70},
        format="json",
    )
    assert_conflict(response, status)
    assert not ScoreReport.objects.exists()
