"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes the launcher stack's `/metrics` during a 50-session
lifecycle (SPEC §11): gunicorn's two workers and the Celery prefork children each write their own series into the
stack's PROMETHEUS_MULTIPROC_DIR, and the one endpoint adds them up.

Checked through Prometheus's HTTP API: the session transitions counter equals the history rows the stack wrote,
the series recorded only by the web process (the LDS CloudEvents it received, the RUNNING moves they made) and
only by the Celery workers (reconcile passes, the external calls, the READY moves) are all there, the gauges read
at scrape time too, and every query of the shipped Grafana dashboard evaluates.
"""

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from lcm.tools.bench.rig import drive
from lcm.tools.processes import free_ports, http_ok
from sessions.models import SessionStatusChange
from tests.support.processes import log_tails
from tests.support.waiting import poll, wait_until

SESSIONS = 50
WORKERS = 5
PROMETHEUS = "/usr/bin/prometheus"
TOKEN = "a-scrape-token-for-prometheus"
GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lcm.json"


@pytest.fixture
def prometheus(tmp_path):
    """`start(target)`: Prometheus scraping `target` (host:port) every second with the bearer token; its API URL."""
    binary = PROMETHEUS if Path(PROMETHEUS).exists() else shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian package prometheus; scripts/test installs it as root)")
    processes = []

    def start(target: str) -> str:
        port = free_ports(1)[0]
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "lcm",
                            "metrics_path": "/metrics",
                            "authorization": {"type": "Bearer", "credentials": TOKEN},
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
        command = [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                   f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
        setpriv = shutil.which("setpriv")
        if setpriv:
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{url}/-/ready"), timeout=30, what="Prometheus ready",
                   details=lambda: (tmp_path / "prometheus.log").read_text())  # fmt: skip
        return url

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(url: str, expr: str) -> list:
    answer = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def scalar(url: str, expr: str) -> float | None:
    result = query(url, expr)
    return float(result[0]["value"][1]) if result else None


def stack_transitions() -> int:
    """Session moves the stack's processes wrote (bookings, from nothing to PENDING, were made by this process)."""
    rows = SessionStatusChange.objects.filter(entity="session").exclude(from_status="")
    return sum(1 for f, t in rows.values_list("from_status", "to_status") if f != t)


@pytest.mark.django_db(transaction=True)
def test_prometheus_scrapes_every_process_through_one_endpoint_during_fifty_lifecycles(start_stack, prometheus):
    stack, rig = start_stack(env={"LCM_METRICS_TOKEN": TOKEN})
    assert requests.get(f"{stack.urls['web']}/metrics", timeout=10).status_code == 401
    url = prometheus(stack.urls["web"].removeprefix("http://"))
    wait_until(lambda: scalar(url, 'up{job="lcm"}') == 1, timeout=30, what="the first successful scrape",
               details=lambda: str(query(url, "up")))  # fmt: skip

    rig.add_workers(WORKERS, cpu_cores=10, memory_gb=64, storage_gb=1000, max_nodes=200)
    definition = rig.definition()
    ids = rig.book(definition, SESSIONS)
    wait_until(lambda: rig.statuses(ids).get("READY", 0) == SESSIONS, timeout=150, what="50 sessions READY",
               details=lambda: f"{rig.statuses(ids)}\n{log_tails(stack)}")  # fmt: skip
    drive(rig, definition, SESSIONS, rate=None, timeout=180, booked=ids)
    assert rig.statuses(ids) == {"ARCHIVED": SESSIONS}

    expected = stack_transitions()
    assert expected >= SESSIONS * 9  # SCHEDULED, INSTANTIATING, READY, RUNNING, ... ARCHIVED
    counted = 'sum(lcm_transitions_total{entity="session", from!=""})'
    assert poll(lambda: scalar(url, counted) == expected, timeout=30, interval=0.5), (scalar(url, counted), expected)

    # Recorded by gunicorn only: the LDS CloudEvents and the RUNNING moves they made.
    assert scalar(url, 'sum(lcm_cloudevents_received_total{outcome="accepted"})') >= 2 * SESSIONS
    assert scalar(url, 'sum(lcm_transitions_total{entity="session", to="RUNNING"})') == SESSIONS
    # Recorded by the Celery workers only: reconcile passes, calls to CML/LDS/Grading, the READY moves.
    assert scalar(url, 'sum(lcm_reconcile_passes_total{loop="lablets"})') > SESSIONS
    assert scalar(url, 'sum(lcm_transitions_total{entity="session", to="READY"})') == SESSIONS
    assert scalar(url, "sum(lcm_session_ready_seconds_count)") == SESSIONS
    systems = {row["metric"]["system"] for row in query(url, "sum by (system) (lcm_external_calls_total)")}
    assert {"cml", "lds", "grading"} <= systems
    assert scalar(url, 'sum(lcm_loop_ticks_total{loop="lablets"})') > 0
    # Read from the database at scrape time by the web process.
    assert scalar(url, 'lcm_sessions{status="ARCHIVED"}') == SESSIONS
    assert scalar(url, 'sum(lcm_workers{status="RUNNING"})') >= WORKERS
    assert scalar(url, 'lcm_loop_last_tick_age_seconds{loop="lablets"}') is not None

    # One file per process and kind: both gunicorn workers and several Celery children wrote series.
    writers = {path.stem.split("_", 1)[1] for path in stack.metrics_dir.glob("counter_*.db")}
    assert len(writers) >= 3, writers

    dashboard = json.loads(GRAFANA.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            query(url, target["expr"])  # every dashboard query evaluates
