"""Shared kernel: health endpoints, request ids, structured logging, production secret guard, pages."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from lcm.fsm import machine
from lcm.logging import JsonFormatter, RequestIdFilter, request_id_var
from tests.factories import SessionFactory, WorkerFactory

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.django_db
def test_healthz_and_readyz(client):
    assert client.get("/healthz").json()["status"] == "ok"
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


def test_request_id_is_echoed_or_created(client):
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response["X-Request-ID"] == "abc-123"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})["X-Request-ID"]
    assert generated != "bad id with spaces" and len(generated) == 32


def test_json_log_lines_carry_the_request_id():
    record = logging.LogRecord("lcm.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.session_id = "s-1"
    token = request_id_var.set("req-9")
    try:
        RequestIdFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello world"
    assert line["request_id"] == "req-9"
    assert line["session_id"] == "s-1"
    assert line["level"] == "INFO"


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "LCM_INTERNAL_API_KEY", "LCM_WEBHOOK_SECRET"])
def test_production_refuses_default_secrets(missing):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LCM_"))}
    env |= {
        "DJANGO_DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "lcm.settings",
        "DJANGO_SECRET_KEY": "a-real-secret-key-for-the-test-0123456789",
        "LCM_INTERNAL_API_KEY": "real-internal-key",
        "LCM_WEBHOOK_SECRET": "real-webhook-secret",
    }
    env.pop(missing)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert f"{missing} must be set" in result.stderr


@pytest.mark.django_db
def test_pages_require_login(client):
    for url in ("/", "/sessions/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_pages_render_for_a_logged_in_user(client, admin_user):
    client.force_login(admin_user)
    session = SessionFactory(status="SCHEDULED", worker=WorkerFactory())
    assert client.get(reverse("login")).status_code == 200
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert session.owner in dashboard.content.decode()
    listing = client.get("/sessions/?status=scheduled,nonsense&owner=" + "x" * 500)
    assert listing.status_code == 200
    detail = client.get(f"/sessions/{session.pk}/")
    assert detail.status_code == 200
    assert 'data-status="SCHEDULED"' in detail.content.decode()
    assert client.get("/sessions/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_first_error_line_survives_percent_signs():
    from django.core.exceptions import ValidationError

    from lcm.errors import first_error_line

    assert first_error_line(ValidationError({"name": ["50%off is taken"]})) == "name: 50%off is taken"


def test_a_state_machine_is_one_table_read_like_the_spec():

    door = machine(
        "DoorStatus",
        """
            OPEN    green  -> CLOSED
            CLOSED  amber  -> OPEN LOCKED
            LOCKED  red    ->
        """,
    )
    assert door.choices.values == ["OPEN", "CLOSED", "LOCKED"]
    assert door.choices.CLOSED.label == "Closed" and door.choices.__module__ == __name__
    assert door.transitions == {"OPEN": {"CLOSED"}, "CLOSED": {"OPEN", "LOCKED"}, "LOCKED": set()}
    assert door.colours == {"OPEN": "green", "CLOSED": "amber", "LOCKED": "red"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("OPEN green -> SHUT", "OPEN moves to unknown status ['SHUT']"),
        ("OPEN -> OPEN", "expected `STATUS colour -> TARGETS`"),
        ("OPEN green OPEN", "expected `STATUS colour -> TARGETS`"),
    ],
)
def test_a_typo_in_a_state_table_is_refused_at_import(table, message):

    with pytest.raises(ValueError, match=re.escape(message)):
        machine("DoorStatus", table)
