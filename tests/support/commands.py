"""Run a management command in-process and capture what it prints (SPEC §5.6's contract: an error is one
`CommandError` line, with nothing on stdout)."""

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent.parent


def run(*args) -> str:
    """Run a command in-process; returns its stdout."""
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def run_json(*args):
    """Run a command with `--json`; returns the parsed document."""
    return json.loads(run(*args, "--json"))


def fails(*args) -> str:
    """Run a command expected to fail; returns the one-line message Django prints on stderr."""
    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command(*args, stdout=out, stderr=StringIO())
    message = str(excinfo.value)
    assert message and "\n" not in message
    assert out.getvalue() == ""
    return message


def manage(*args, settings_module: str = "lcm.settings") -> subprocess.CompletedProcess:
    """Run `manage.py` for real against the test database (the test must commit: transaction=True); the
    completed process holds its exit code, stdout and stderr."""
    db = connection.settings_dict
    url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": settings_module}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
