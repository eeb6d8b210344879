"""Authentication (tokens, sessions), roles, the error contract and the request id (SPEC §5.1, §6.2)."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.test import APIClient

from lcm.api.exceptions import exception_handler, flatten_errors
from lcm.api.tokens import hash_key, token_create, token_revoke
from lcm.errors import Conflict, InvalidTransition
from lcm.models import ApiToken

pytestmark = pytest.mark.django_db


def with_header(value):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    return client


def test_token_and_bearer_keywords(instructor):
    key = token_create(instructor, actor="test").key
    for header in (f"Token {key}", f"Bearer {key}", f"token {key}", f"BEARER {key}"):
        assert with_header(header).get("/api/v1/sessions/").status_code == 200, header


def test_only_the_hash_is_stored(instructor):
    created = token_create(instructor, actor="test", name="ci")
    row = ApiToken.objects.get()
    assert row.key_hash == hash_key(created.key) != created.key
    assert created.key.startswith(row.key_prefix)
    assert not ApiToken.objects.filter(key_hash=created.key).exists()


@pytest.mark.parametrize(
    "header", ["Token", "Token a b", "Token lcm_unknown", "Bearer ", "Token \u00e9\u00e9", "Basic dXNlcjpwdw=="]
)
def test_bad_credentials_are_401(header):
    response = with_header(header).get("/api/v1/sessions/")
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}
    assert response["WWW-Authenticate"] == 'Token realm="api"'


def test_revoked_expired_and_inactive_are_401(instructor):
    revoked = token_create(instructor, actor="test")
    token_revoke(revoked.token, actor="test")
    assert with_header(f"Token {revoked.key}").get("/api/v1/sessions/").json()["detail"] == "Token has been revoked."
    expiring = token_create(instructor, actor="test", expires_days=1)
    ApiToken.objects.filter(pk=expiring.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert with_header(f"Token {expiring.key}").get("/api/v1/sessions/").json()["detail"] == "Token has expired."
    active = token_create(instructor, actor="test")
    instructor.is_active = False
    instructor.save()
    assert with_header(f"Token {active.key}").get("/api/v1/sessions/").status_code == 401


def test_last_used_is_recorded(instructor):
    created = token_create(instructor, actor="test")
    assert created.token.last_used_at is None
    with_header(f"Token {created.key}").get("/api/v1/status/")
    created.token.refresh_from_db()
    assert created.token.last_used_at is not None


def test_browser_session_works_with_csrf(instructor):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(instructor)
    assert client.get("/api/v1/sessions/").status_code == 200
    # An unsafe method without the CSRF token is refused.
    assert client.post("/api/v1/sessions/", {}).status_code == 403


def test_roles(group_admin_api, instructor_api, nobody_api, definition):
    # lcm-admins group = admin; instructors group = instructor; neither = no access.
    assert group_admin_api.delete(f"/api/v1/definitions/{definition.pk}/").status_code == 200
    assert instructor_api.delete(f"/api/v1/definitions/{definition.pk}/").status_code == 403
    assert nobody_api.get("/api/v1/definitions/").status_code == 403
    assert instructor_api.get("/api/v1/definitions/").status_code == 200


def test_request_id_is_echoed_on_success_and_errors(instructor_api, anon_api):
    ok = instructor_api.get("/api/v1/status/", HTTP_X_REQUEST_ID="req-123")
    assert ok["X-Request-ID"] == "req-123"
    assert anon_api.get("/api/v1/status/")["X-Request-ID"]
    assert instructor_api.get("/api/v1/nothing-here", HTTP_X_REQUEST_ID="req-404")["X-Request-ID"] == "req-404"


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_unknown_api_paths_are_json_404(instructor_api, method):
    # A newline in the path (the fuzzer found it) is a JSON 404 too, not Django's HTML page.
    for path in ("/api/v1/nothing", "/api/v1/sessions", "/api/internal/x/y", "/api/v1", "/api/v1/no%0Athing"):
        response = getattr(instructor_api, method)(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Not found."}


def test_wrong_method_is_405_json(instructor_api, session):
    response = instructor_api.put(f"/api/v1/sessions/{session.pk}/", {})
    assert response.status_code == 405
    assert "detail" in response.json()
    assert instructor_api.options("/api/v1/sessions/").status_code == 405


def test_unsupported_media_type_is_415_json(instructor_api):
    response = instructor_api.post("/api/v1/sessions/", "owner=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "detail" in response.json()


# ---------------------------------------------------------------------------------------
# The exception handler itself
# ---------------------------------------------------------------------------------------


def test_handler_maps_domain_errors():
    refused = exception_handler(InvalidTransition("session", "READY", "ARCHIVED", ["RUNNING"]), {})
    assert refused.status_code == 409
    assert refused.data == {
        "detail": "session cannot go from READY to ARCHIVED; allowed: RUNNING",
        "code": "invalid_transition",
        "current_status": "READY",
        "allowed": ["RUNNING"],
    }
    clash = exception_handler(Conflict("booked", existing_id="abc", field="reservation_id"), {})
    assert (clash.status_code, clash.data["existing_id"], clash.data["code"]) == (409, "abc", "conflict")


def test_handler_maps_django_and_drf_errors():
    from django.core.exceptions import ValidationError

    assert exception_handler(ValidationError({"owner": ["is required"]}), {}).data == {"owner": ["is required"]}
    assert exception_handler(ValidationError("bad"), {}).data == {"non_field_errors": ["bad"]}
    assert exception_handler(PermissionDenied(), {}).status_code == 403
    throttled = exception_handler(exceptions.Throttled(wait=12), {})
    assert (throttled.status_code, throttled["Retry-After"], throttled.data["retry_after"]) == (429, "12", 12)
    parse = exception_handler(exceptions.ParseError("JSON parse error"), {})
    assert (parse.status_code, parse.data) == (400, {"non_field_errors": ["JSON parse error"]})


def test_handler_answers_unexpected_errors_with_json_500(caplog):
    response = exception_handler(RuntimeError("boom"), {})
    assert (response.status_code, response.data) == (500, {"detail": "Internal server error."})
    assert "boom" not in str(response.data)
    assert any("unhandled error" in r.message for r in caplog.records)


def test_flatten_errors_names_nested_fields():
    nested = {"user_session": {"devices": {0: ["bad"]}}, "sections": [{}, {"name": ["required"]}], "x": ["y"]}
    assert flatten_errors(nested) == {
        "user_session.devices[0]": ["bad"],
        "sections[1].name": ["required"],
        "x": ["y"],
    }
    assert flatten_errors(["a", "b"]) == {"non_field_errors": ["a", "b"]}
