"""Fixtures for the REST API tests: users per role, their tokens, authenticated clients."""

import sys
from collections import Counter

import pytest
from django.contrib.auth.models import Group
from django.core.servers.basehttp import ThreadedWSGIServer
from rest_framework.test import APIClient

from lcm.api.tokens import token_create
from lcm.roles import ADMIN_GROUP, INSTRUCTOR_GROUP
from tests.factories import DefinitionFactory, SessionFactory, WorkerFactory

INTERNAL_KEY = "test-internal-api-key"


def pytest_terminal_summary(terminalreporter):
    """After a run that fuzzed the API: how many operations and requests, by status code."""
    fuzz = sys.modules.get("tests.api.test_fuzz")
    if fuzz is None or not fuzz.TALLY:
        return
    total = sum(sum(codes.values()) for codes in fuzz.TALLY.values())
    by_code = sum(fuzz.TALLY.values(), Counter())
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(by_code.items()))
    terminalreporter.write_line(f"schemathesis: {len(fuzz.TALLY)} operations, {total} requests ({codes})")


@pytest.fixture(scope="session", autouse=True)
def _live_server_backlog():
    """Let the live server queue 128 connections instead of socketserver's 5.

    With 5, a burst of 50 simultaneous clients (the concurrency test) overflows the listen
    queue and the kernel resets connections before Django sees them. Set before the
    session-scoped `live_server` starts.
    """
    previous = ThreadedWSGIServer.request_queue_size
    ThreadedWSGIServer.request_queue_size = 128
    yield
    ThreadedWSGIServer.request_queue_size = previous


@pytest.fixture(autouse=True)
def _internal_key(settings):
    settings.INTERNAL_API_KEY = INTERNAL_KEY


def _user(django_user_model, username, *, group=None, **flags):
    user = django_user_model.objects.create_user(username, f"{username}@example.com", "pw", **flags)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def staff_user(django_user_model):
    return _user(django_user_model, "api-staff", is_staff=True)


@pytest.fixture
def group_admin(django_user_model):
    """An admin by group membership (not staff)."""
    return _user(django_user_model, "api-group-admin", group=ADMIN_GROUP)


@pytest.fixture
def instructor(django_user_model):
    return _user(django_user_model, "api-instructor", group=INSTRUCTOR_GROUP)


@pytest.fixture
def nobody(django_user_model):
    """Signed in, but neither admin nor instructor."""
    return _user(django_user_model, "api-nobody")


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user, actor='test').key}")
    return client


@pytest.fixture
def admin_api(staff_user):
    return client_for(staff_user)


@pytest.fixture
def group_admin_api(group_admin):
    return client_for(group_admin)


@pytest.fixture
def instructor_api(instructor):
    return client_for(instructor)


@pytest.fixture
def nobody_api(nobody):
    return client_for(nobody)


@pytest.fixture
def anon_api():
    return APIClient()


@pytest.fixture
def internal_api():
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=INTERNAL_KEY)
    return client


@pytest.fixture
def definition(db):
    return DefinitionFactory()


@pytest.fixture
def worker(db):
    return WorkerFactory()


@pytest.fixture
def session(db, definition):
    return SessionFactory(definition=definition)


def assert_conflict(response, current_status, allowed=None):
    """A 409 of the SPEC §5.1 contract for a refused transition."""
    assert response.status_code == 409, response.content
    body = response.json()
    assert body["code"] == "invalid_transition"
    assert body["current_status"] == current_status
    assert isinstance(body["detail"], str) and body["detail"]
    if allowed is not None:
        assert body["allowed"] == allowed
    return body


def assert_field_error(response, field):
    """A 400 of the SPEC §5.1 contract naming `field`."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body, body
    assert isinstance(body[field], list) and all(isinstance(m, str) for m in body[field])
    return body
