"""Terminal escape codes and other control characters in values `lcm_run`, `lcm_watch` and `lcm_seed_demo` print
(an option a person typed, configuration, a stored name in an error) are shown escaped, never obeyed (issue 18;
the helper is `lcm.management.command_utils.printable`, as for `session_show`)."""

import pytest
from django.core.exceptions import ValidationError

from lcm import coordination
from tests.support.commands import fails, run

pytestmark = pytest.mark.django_db

ESCAPE = "\x1b[2J\x1b[31m"


def assert_escaped(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J\\x1b[31m" in text


def test_lcm_run_prints_its_host_escaped():
    out = run("lcm_run", "--no-serve", "--host", f"127.0.0.1{ESCAPE}")
    assert_escaped(out)
    assert "LCM is starting at http://127.0.0.1\\x1b[2J\\x1b[31m:8000/" in out


def test_lcm_run_errors_are_one_escaped_line():
    assert_escaped(fails("lcm_run", "--host", f"no-such-host{ESCAPE}\x07", "--port", "8000"))


def test_lcm_seed_demo_error_line_is_escaped(monkeypatch):
    def refuse():
        raise ValidationError({"name": [f"a stored name{ESCAPE}\x07 is refused"]})

    monkeypatch.setattr("sessions.management.commands.lcm_seed_demo.seed_demo", refuse)
    assert_escaped(fails("lcm_seed_demo"))


def test_lcm_seed_demo_text_output_is_escaped(monkeypatch):
    monkeypatch.setattr("sessions.management.commands.lcm_seed_demo.seed_demo", lambda: {f"users{ESCAPE}": ["admin"]})
    assert_escaped(run("lcm_seed_demo"))


def test_lcm_watch_prints_its_endpoints_escaped(settings):
    settings.LCM_ETCD_ENDPOINTS = f"http://127.0.0.1:9{ESCAPE}"
    coordination.reset_coordinator()
    try:
        assert_escaped(fails("lcm_watch", "--once"))
    finally:
        coordination.reset_coordinator()
