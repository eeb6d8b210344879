"""`/metrics` (SPEC §11): who may scrape it, what it exports (recorded series and the gauges read from the
database at scrape time), and the Grafana dashboard shipped in the repo, whose every query names only series a
real scrape exports. The multiprocess side (gunicorn + Celery prefork under a real Prometheus) is in
tests/processes/test_prometheus.py."""

import json
import re
from pathlib import Path

import pytest
from django.db import transaction
from prometheus_client import REGISTRY

from lcm import metrics
from lcm.models import LoopHeartbeat
from sessions.services import session_transition
from tests.factories import SessionFactory, TemplateFactory, WorkerFactory
from tests.pages.conftest import make_session

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lcm.json"
TOKEN = "a-metrics-token-for-the-tests"


def scrape(client, **headers) -> str:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.content.decode()


def series(text: str) -> dict[str, float]:
    """`{'name{labels}': value}` of every sample line."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def exported_names(text: str) -> set[str]:
    """Every series name a scrape offers: sample names, and each declared family with its histogram parts."""
    names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.mark.django_db
def test_without_a_token_only_loopback_may_scrape(client, settings):
    settings.LCM_METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="10.0.0.7")
    assert refused.status_code == 403 and "LCM_METRICS_TOKEN" in refused.json()["detail"]


@pytest.mark.django_db
def test_with_a_token_a_missing_or_wrong_bearer_is_refused(client, settings):
    settings.LCM_METRICS_TOKEN = TOKEN
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Token " + TOKEN).status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token").status_code == 403
    # With the token, from anywhere (the scraper is not on loopback).
    text = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}", REMOTE_ADDR="10.0.0.7")
    assert TOKEN not in text


@pytest.mark.django_db
def test_metrics_off_is_a_404(client, settings):
    settings.LCM_METRICS_ENABLED = False
    assert client.get("/metrics").status_code == 404


@pytest.mark.django_db
def test_the_scrape_reads_sessions_workers_fleet_loops_and_cost_from_the_database(client):
    template = TemplateFactory(name="m5", cost_per_hour="1.25")
    worker = WorkerFactory(name="w-a", template=template, cpu_cores=8)
    WorkerFactory(name="w-b", status="FAILED", template=template)
    make_session("RUNNING", worker=worker, with_children=False)
    make_session("PENDING", with_children=False)
    from django.utils import timezone  # Imported here: only this test writes a heartbeat.

    LoopHeartbeat.objects.create(name="lablets", last_tick_at=timezone.now())
    found = series(scrape(client))
    assert found['lcm_sessions{status="RUNNING"}'] == 1 and found['lcm_sessions{status="PENDING"}'] == 1
    assert found['lcm_sessions{status="ARCHIVED"}'] == 0
    assert found['lcm_workers{status="RUNNING"}'] == 1 and found['lcm_workers{status="FAILED"}'] == 1
    cpu = worker.sessions.first().definition.cpu_cores
    assert found['lcm_fleet_utilisation_ratio{resource="cpu"}'] == pytest.approx(cpu / 8)
    assert found['lcm_fleet_capacity{resource="cpu"}'] == 8
    assert found["lcm_fleet_cost_per_hour"] == pytest.approx(1.25)  # the RUNNING worker only
    assert found['lcm_queue_depth{queue="pending"}'] == 1
    assert 0 <= found['lcm_loop_last_tick_age_seconds{loop="lablets"}'] < 60
    assert found['lcm_loop_interval_seconds{loop="lablets"}'] > 0


def _value(name, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db(transaction=True)
def test_a_transition_is_counted_once_it_commits_and_ready_observes_the_time_from_creation():
    session = SessionFactory(status="INSTANTIATING", worker=WorkerFactory())
    moves = {"entity": "session", "from": "INSTANTIATING", "to": "READY"}
    before, ready_before = _value("lcm_transitions_total", **moves), _value("lcm_session_ready_seconds_count")
    with pytest.raises(RuntimeError), transaction.atomic():
        session_transition(session, "READY", actor="test", user_session={"login_url": "https://lds.example/x"})
        raise RuntimeError("rolled back")
    assert _value("lcm_transitions_total", **moves) == before  # a rolled back move is not counted
    session_transition(session, "READY", actor="test", user_session={"login_url": "https://lds.example/x"})
    assert _value("lcm_transitions_total", **moves) == before + 1
    assert _value("lcm_session_ready_seconds_count") == ready_before + 1


def test_reconcile_passes_and_external_calls_are_recorded():
    from lcm import reconcile  # Imported here: the runner is what is under test.
    from lcm.http import HttpClient

    before = _value("lcm_reconcile_passes_total", loop="t-loop", result="requeue")
    reconcile._run("t-loop", "k", lambda key: reconcile.Result.requeue(5), None)
    assert _value("lcm_reconcile_passes_total", loop="t-loop", result="requeue") == before + 1
    assert _value("lcm_reconcile_duration_seconds_count", loop="t-loop") >= 1

    client = HttpClient("http://127.0.0.1:9", retries=0)  # nothing listens on the discard port
    client.system = "test-system"
    with pytest.raises(Exception):  # noqa: B017 - the typed error itself is lcm.http's business
        client.request("GET", "/x", operation="probe")
    assert _value("lcm_external_calls_total", system="test-system", operation="probe", outcome="unavailable") == 1


@pytest.mark.django_db
def test_every_grafana_query_uses_only_series_the_endpoint_exports(client):
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 15
    used = {name for expr in exprs for name in re.findall(r"\blcm_[a-z0-9_]+\b", expr)}
    exported = exported_names(scrape(client))
    assert used - exported == set(), f"queries name series /metrics does not export: {sorted(used - exported)}"
    # Every series SPEC §11 names has a panel.
    for name in ("lcm_sessions", "lcm_transitions_total", "lcm_session_ready_seconds_bucket",
                 "lcm_reconcile_passes_total", "lcm_reconcile_duration_seconds_bucket", "lcm_external_calls_total",
                 "lcm_external_call_duration_seconds_bucket", "lcm_queue_depth", "lcm_loop_last_tick_age_seconds",
                 "lcm_workers", "lcm_fleet_utilisation_ratio", "lcm_fleet_cost_per_hour"):  # fmt: skip
        assert name in used, name


def test_the_multiprocess_directory_is_unset_in_unit_tests():
    assert metrics.MULTIPROC_DIR == ""  # single-process mode: this process's own registry
