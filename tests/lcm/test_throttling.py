"""Login throttling (SPEC §12, issue 18: "50 wrong passwords, then the right one still logs in"): after
LCM_LOGIN_FAILURE_LIMIT failures the username and the address are locked for LCM_LOGIN_LOCKOUT_MINUTES on the
login page, the admin and the API (tokens, the internal key); the right password (or token) is refused during
the lock; the lock ends by itself. django-axes keeps the attempts in the database: PostgreSQL here, SQLite in a
child process below."""

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from lcm.api.tokens import token_create

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-right-password-7"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def user():
    return get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)


def login(client, path: str, password: str, username: str = "ops"):
    return client.post(path, {"username": username, "password": password})


def signed_in(client) -> bool:
    return client.get("/").status_code == 200


def let_the_lock_expire(settings) -> None:
    """Move the attempts back past the cool-off (the clock, not a sleep)."""
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"], ids=["login page", "admin"])
def test_after_the_limit_the_right_password_is_refused_until_the_lock_ends(client, user, settings, path):
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(4):
        assert login(client, path, "wrong").status_code == 200  # the form again, with its error
    assert login(client, path, "wrong").status_code == 429
    locked = login(client, path, PASSWORD)
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.content.decode()
    assert not signed_in(client)
    let_the_lock_expire(settings)
    assert login(client, path, PASSWORD).status_code == 302
    assert signed_in(client)


def test_fifty_wrong_passwords_then_the_right_one_is_refused(client, user):
    for _ in range(50):
        login(client, "/accounts/login/", "wrong")
    assert login(client, "/accounts/login/", PASSWORD).status_code == 429
    assert not signed_in(client)


def test_the_lock_holds_the_username_from_another_address_and_the_address_for_another_username(user, settings):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(5):
        login(attacker, "/accounts/login/", "wrong")
    elsewhere = Client(REMOTE_ADDR="198.51.100.2")
    assert login(elsewhere, "/accounts/login/", PASSWORD).status_code == 429  # the account is locked
    get_user_model().objects.create_user("other", "other@example.com", PASSWORD)
    assert login(attacker, "/accounts/login/", PASSWORD, username="other").status_code == 429  # so is the address
    assert login(elsewhere, "/accounts/login/", PASSWORD, username="other").status_code == 302


def test_a_short_configured_lock_ends_by_itself(client, user, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(seconds=2)
    login(client, "/accounts/login/", "wrong")
    login(client, "/accounts/login/", "wrong")
    assert login(client, "/accounts/login/", PASSWORD).status_code == 429
    time.sleep(2.5)  # the configured cool-off passes on the real clock
    assert login(client, "/accounts/login/", PASSWORD).status_code == 302


def test_a_success_before_the_limit_starts_the_count_again(client, user):
    for _ in range(4):
        login(client, "/accounts/login/", "wrong")
    assert login(client, "/accounts/login/", PASSWORD).status_code == 302
    client.post("/accounts/logout/")
    for _ in range(4):
        login(client, "/accounts/login/", "wrong")
    assert login(client, "/accounts/login/", PASSWORD).status_code == 302


def test_api_tokens_are_throttled_by_address(client, user, settings):
    key = token_create(user, actor="test", name="script").key
    good = {"HTTP_AUTHORIZATION": f"Token {key}"}
    assert client.get("/api/v1/sessions/", **good).status_code == 200
    for attempt in range(4):
        bad = client.get("/api/v1/sessions/", HTTP_AUTHORIZATION=f"Token wrong-{attempt}")
        assert bad.status_code == 401
    fifth = client.get("/api/v1/sessions/", HTTP_AUTHORIZATION="Token wrong-5")
    assert fifth.status_code == 429 and fifth["Content-Type"] == "application/json"
    locked = client.get("/api/v1/sessions/", **good)
    assert locked.status_code == 429 and "locked" in locked.json()["detail"]
    other_address = Client(REMOTE_ADDR="198.51.100.9")
    assert other_address.get("/api/v1/sessions/", **good).status_code == 200  # a token has no username to lock
    let_the_lock_expire(settings)
    assert client.get("/api/v1/sessions/", **good).status_code == 200


def test_the_internal_api_key_is_throttled_too(client, settings):
    for _ in range(4):
        assert client.get("/api/internal/sessions/", HTTP_X_API_KEY="guess").status_code == 401
    assert client.get("/api/internal/sessions/", HTTP_X_API_KEY="guess").status_code == 429
    locked = client.get("/api/internal/sessions/", HTTP_X_API_KEY=settings.INTERNAL_API_KEY)
    assert locked.status_code == 429


def test_behind_a_proxy_the_forwarded_address_counts(user, settings):
    settings.LCM_CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    proxy = Client(REMOTE_ADDR="10.0.0.1")
    for _ in range(5):
        proxy.post(
            "/accounts/login/", {"username": "nobody", "password": "x"}, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.5"
        )
    # Another client behind the same proxy is not locked out by the first one's failures.
    answer = proxy.post(
        "/accounts/login/", {"username": "ops", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="198.51.100.3"
    )
    assert answer.status_code == 302


def test_the_limit_and_the_lock_come_from_the_environment():
    code = "from lcm import settings as s; print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds())"
    env = dict(os.environ, LCM_LOGIN_FAILURE_LIMIT="3", LCM_LOGIN_LOCKOUT_MINUTES="0.5")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "30.0"]


SQLITE_SCRIPT = """
from django.contrib.auth import get_user_model
from django.test import Client
get_user_model().objects.create_user("ops", "ops@example.com", "a-long-right-password-7")
client = Client()
codes = [client.post("/accounts/login/", {"username": "ops", "password": "wrong"}).status_code for _ in range(5)]
codes.append(client.post("/accounts/login/", {"username": "ops", "password": "a-long-right-password-7"}).status_code)
print(codes)
"""


def test_the_lockout_works_on_the_embedded_sqlite_database(tmp_path):
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'lcm.sqlite3'}", DJANGO_SETTINGS_MODULE="lcm.settings")
    env.pop("LCM_TEST_STRICT", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, capture_output=True)
    out = subprocess.run(
        [*manage, "shell", "-c", SQLITE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[200, 200, 200, 200, 429, 429]"
