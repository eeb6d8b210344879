"""Quiet, useful logs: no line per poll served, expected 4xx without tracebacks, and `lcm_run` reconciles
nothing before its simulators answer (so its first start never logs "CML unreachable")."""

import logging
import re
import socket
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from lcm.logging import ExpectedClientErrorFilter
from lcm.roles import INSTRUCTOR_GROUP
from sessions.management.commands import lcm_run
from tests.factories import SessionFactory

HX = {"HX-Request": "true"}
LOGGERS = ("django", "django.request", "django.server", "lcm")


@pytest.fixture
def records(caplog):
    """Every record of LCM's and Django's loggers (they do not propagate to the root, where caplog listens)."""
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(caplog.handler)
    yield caplog
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(caplog.handler)


@pytest.fixture
def instructor_client(client, django_user_model):
    user = django_user_model.objects.create_user("teacher", "t@example.com", "pw")
    user.groups.add(Group.objects.get_or_create(name=INSTRUCTOR_GROUP)[0])
    client.force_login(user)
    return client


def test_the_configured_levels_log_no_line_per_request_served(settings):
    loggers = settings.LOGGING["loggers"]
    assert loggers["django.server"]["level"] == "WARNING"  # runserver's "GET /… 200" lines (lcm_run)
    assert loggers["werkzeug"]["level"] == "WARNING"  # the simulators' request lines
    assert "expected_4xx" in loggers["django.request"]["filters"]


@pytest.mark.django_db
def test_a_live_poll_logs_nothing(instructor_client, records):
    html = instructor_client.get("/").content.decode()
    poll = re.search(r'hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")
    records.clear()
    for _ in range(3):
        assert instructor_client.get(poll, headers=HX).status_code in (200, 204)
    assert [r for r in records.records if r.levelno >= logging.INFO] == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "status"),
    [("/settings/", 403), ("/no-such-page/", 404), ("/sessions/00000000-0000-0000-0000-000000000000/", 404)],
)
def test_expected_page_refusals_are_one_line_without_a_traceback(instructor_client, records, url, status):
    assert instructor_client.get(url).status_code == status
    logged = [r for r in records.records if r.name == "django.request"]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert logged[0].exc_info is None and "Traceback" not in records.text


@pytest.mark.django_db
def test_expected_api_refusals_are_one_line_without_a_traceback(instructor_client, records):
    session = SessionFactory(status="ARCHIVED")
    answers = [
        instructor_client.get("/api/v1/sessions/00000000-0000-0000-0000-000000000000/").status_code,
        instructor_client.post(
            f"/api/v1/sessions/{session.pk}/transition", {"status": "RUNNING"}, content_type="application/json"
        ).status_code,
        instructor_client.post("/api/v1/workers/", {}, content_type="application/json").status_code,
    ]
    assert answers[:2] == [404, 409] and 400 <= answers[2] < 500, answers
    assert all(r.exc_info is None for r in records.records)
    assert not [r for r in records.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in records.text


def test_a_server_error_keeps_its_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys  # noqa: PLC0415 - Imported here: only this test reads the exception being handled

        info = sys.exc_info()
    for status, kept in ((500, True), (404, False)):
        record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "x", (), info)
        record.status_code = status
        assert ExpectedClientErrorFilter().filter(record)
        assert (record.exc_info is not None) is kept


@pytest.mark.django_db
def test_lcm_run_seeds_with_the_in_process_pool_held_back(monkeypatch, settings):
    settings.LCM_INPROCESS_WORKERS = 4
    seen = []
    monkeypatch.setattr(lcm_run, "database_is_empty", lambda: True)
    monkeypatch.setattr(lcm_run, "seed_demo", lambda: seen.append(settings.LCM_INPROCESS_WORKERS))
    call_command("lcm_run", "--no-serve", stdout=StringIO())
    assert seen == [0]  # nothing reconciled (no CML sync) while the simulators are not up
    assert settings.LCM_INPROCESS_WORKERS == 4


def test_lcm_run_waits_for_the_simulators_health_and_names_one_that_never_answers():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(CommandError, match=r"the cml simulator at http://127.0.0.1:\d+ did not answer"):
            lcm_run.Command()._wait_healthy({"cml": f"http://127.0.0.1:{port}"}, timeout=0.3)
