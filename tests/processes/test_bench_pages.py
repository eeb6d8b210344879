"""`manage.py bench_pages` with a few pages: gunicorn serves every mode and the table is printed."""

import os
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from sessions.models import LabletSession


@pytest.mark.django_db(transaction=True)
def test_bench_pages_prints_the_stamp_poll_beside_the_digest_poll():
    if connection.vendor != "postgresql":
        pytest.skip("bench_pages needs PostgreSQL (DATABASE_URL)")
    out = StringIO()
    call_command(
        "bench_pages", "--pages", "3", "--sessions", "60", "--exam-size", "10", "--seconds", "2", "--warmup", "1",
        "--redis-db", os.environ.get("LCM_TEST_REDIS_DB", "13"), stdout=out, stderr=StringIO(),
    )  # fmt: skip
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("bench_pages: 3 open pages")
    assert lines[1].split() == [
        "mode",
        "polls/s",
        "p50",
        "ms",
        "p95",
        "ms",
        "200s",
        "204s",
        "errors",
        "CPU",
        "ms/poll",
        "web",
        "cores",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    assert list(rows) == ["digest", "stamp", "unchanged"]
    for figures in rows.values():
        assert float(figures[0]) > 0  # polls served
        assert figures[5] == "0"  # no errors
    assert int(rows["digest"][3]) == 0 or int(rows["digest"][3]) + int(rows["digest"][4]) > 0
    assert LabletSession.objects.count() == 0  # the fixtures are gone
