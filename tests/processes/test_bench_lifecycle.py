"""`manage.py bench_lifecycle` with a handful of sessions: the three runs (etcd-triggered, without evidence, ticks
only) go through the real processes and report every figure."""

import json
import os
from io import StringIO

import pytest
from django.core.management import call_command

from lcm.tools.processes import etcd_binary


@pytest.mark.django_db(transaction=True)
def test_bench_lifecycle_reports_each_figure_beside_its_metrics_off_and_ticks_only_peers():
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    out = StringIO()
    call_command(
        "bench_lifecycle",
        "--sessions", "4", "--workers", "2", "--interval", "0.5",
        "--redis-db", os.environ.get("LCM_TEST_REDIS_DB", "13"), "--in-place", "--json", "--scrape-interval", "1",
        stdout=out, stderr=StringIO(),
    )  # fmt: skip
    runs = json.loads(out.getvalue())
    assert list(runs) == ["etcd-triggered", "metrics off", "evidence off (peer)", "ticks only (peer)"]
    assert runs["etcd-triggered"]["metrics"]["enabled"] and not runs["metrics off"]["metrics"]["enabled"]
    assert runs["metrics off"]["metrics"]["scrapes"] == 0 and runs["etcd-triggered"]["metrics"]["scrapes"] >= 1
    assert runs["etcd-triggered"]["metrics"]["updates_per_session"] > 10
    assert runs["etcd-triggered"]["evidence_items_per_session"] >= 5  # every kind, a node config per node
    assert runs["evidence off (peer)"]["evidence_items_per_session"] == 0
    for figures in runs.values():
        assert 0 < figures["teardown_p50"] <= figures["teardown_p95"]
        assert figures["statuses"] == {"ARCHIVED": 4}
        assert figures["count_ready"] == figures["count_archived"] == 4
        assert figures["rate_ready"] > 0 and figures["rate_archived"] > 0
        assert 0 < figures["ready_p50"] <= figures["ready_p95"] <= figures["ready_max"]
        assert figures["xacts_per_session"] > 0 and figures["rows_written_per_session"] > 0
        cpu = figures["cpu_per_session"]
        assert cpu["lcm"] > 0 and cpu["postgres"] > 0 and cpu["total"] >= cpu["lcm"] + cpu["postgres"]


@pytest.mark.django_db
def test_bench_lifecycle_refuses_to_flush_a_database_that_is_not_a_test_one(settings, monkeypatch):
    from django.core.management.base import CommandError
    from django.db import connection

    monkeypatch.setitem(connection.settings_dict, "NAME", "lcm_production")
    with pytest.raises(CommandError, match="test database"):
        call_command("bench_lifecycle", "--in-place", stdout=StringIO())


def test_the_cpu_meter_counts_postgresql_backends_that_come_and_go(monkeypatch):
    """A backend that appears during the run counts whole, one that exits counts up to its last reading,
    and a pid reused by a new backend does not hide the old one's work."""
    from types import SimpleNamespace

    from lcm.tools.bench import lifecycle as bench_lifecycle

    readings = iter(
        [
            {1: 5.0},  # begin: backend 1 has used 5 s already
            {1: 7.0, 2: 1.0},  # backend 2 is new
            {2: 3.0},  # backend 1 has exited
            {1: 0.5, 2: 4.0},  # a new backend took pid 1
            {2: 4.5},  # delta's own sample
        ]
    )
    current = {}

    def pids():
        current.clear()
        current.update(next(readings))
        return list(current)

    monkeypatch.setattr(bench_lifecycle, "backend_pids", pids)
    monkeypatch.setattr(bench_lifecycle, "process_cpu_seconds", lambda pid: current.get(pid, 0.0))
    stack = SimpleNamespace(config=SimpleNamespace(services=[]), cpu_seconds=lambda name: 0.0)
    meter = bench_lifecycle.CpuMeter(stack)
    meter.begin()
    for _ in range(3):
        meter.sample()
    # backend 1: 7 - 5 = 2; backend 2: 4.5 whole; the new backend on pid 1: 0.5.
    assert meter.delta()["postgres"] == pytest.approx(7.0)
