"""Prometheus metrics (SPEC §11): the series every process records, and `/metrics`, which exports them.

Two kinds of series:
- **recorded** where things happen, in whichever process does them: status transitions (at the one
  history writer, `lcm.fsm.record_changes`), creation → READY seconds, reconcile passes and loop
  ticks (`lcm.reconcile`, `lcm.loops`), external calls (`lcm.http.HttpClient`), CloudEvents received
  and notifications delivered. Under gunicorn and Celery prefork every process writes its own files
  in `PROMETHEUS_MULTIPROC_DIR` (the launcher sets it and empties it at start) and `/metrics` adds
  them up (prometheus_client's multiprocess mode); without that variable a process keeps its own
  (the embedded default is one process);
- **read at scrape time** from the database, by the web process answering `/metrics` only: sessions
  by status, queue depth, seconds since each loop's last tick, workers by status, fleet utilisation,
  cost per hour. The apps register what they export (`register_gauges`, in `AppConfig.ready()`).

`LCM_METRICS_ENABLED=0` turns recording off (and `/metrics` answers 404): `bench_lifecycle` measures
the cost of metrics with it. `/metrics` wants `Authorization: Bearer <LCM_METRICS_TOKEN>` when that is
set (401 without it, 403 when wrong); without a token it answers loopback clients only.
"""

import hmac
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily

# The classic text format (0.0.4): every Prometheus 2.x reads it (Debian's included).
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE

logger = logging.getLogger("lcm.metrics")

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROC_DIR:
    # Files are named by process: qualify the pid with the host, so containers sharing one directory (compose)
    # never write each other's files. Set before the first metric is made.
    _HOST = socket.gethostname().replace("_", "-")
    values.ValueClass = values.MultiProcessValue(lambda: f"{_HOST}-{os.getpid()}")

# Seconds: a reconcile pass, a tick, an external call.
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds from a session's creation to READY: a boot on real CML takes minutes, the simulators a second.
READY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600)

TRANSITIONS = Counter(
    "lcm_transitions",
    "Status changes written to a history table, by entity (session, user_session, grading_session, worker, "
    "worker.desired, worker.license) and from/to status (from is empty for a creation).",
    ["entity", "from", "to"],
)
SESSION_READY_SECONDS = Histogram(
    "lcm_session_ready_seconds", "Seconds from a session's creation to READY.", buckets=READY_BUCKETS
)
RECONCILE_PASSES = Counter(
    "lcm_reconcile_passes",
    "Reconcile passes by loop and result (done, requeue, error, busy: the key was being reconciled elsewhere).",
    ["loop", "result"],
)
RECONCILE_SECONDS = Histogram(
    "lcm_reconcile_duration_seconds", "Duration of one reconcile pass.", ["loop"], buckets=FAST_BUCKETS
)
LOOP_TICKS = Counter("lcm_loop_ticks", "Loop ticks by loop and result (ok, error).", ["loop", "result"])
LOOP_TICK_SECONDS = Histogram("lcm_loop_tick_duration_seconds", "Duration of one tick.", ["loop"], buckets=FAST_BUCKETS)
EXTERNAL_CALLS = Counter(
    "lcm_external_calls",
    "Calls to external systems (cml, lds, grading, ec2, webhook, smtp) by operation and outcome "
    "(ok, or the error: timeout, unavailable, not_found, conflict, forbidden, auth_expired, bad_request, error).",
    ["system", "operation", "outcome"],
)
EXTERNAL_SECONDS = Histogram(
    "lcm_external_call_duration_seconds",
    "Latency of one external call (retries included), by system: per operation the buckets would multiply the "
    "series every process writes and every scrape merges (the counter has the operation).",
    ["system"],
    buckets=FAST_BUCKETS,
)
CLOUDEVENTS_RECEIVED = Counter(
    "lcm_cloudevents_received", "CloudEvents received by the webhook, by outcome.", ["outcome"]
)
NOTIFICATIONS = Counter(
    "lcm_notifications",
    "Notification delivery attempts by channel (email, webhook) and outcome (delivered, retry, failed).",
    ["channel", "outcome"],
)


def enabled() -> bool:
    return settings.LCM_METRICS_ENABLED


def count_transitions(changes: Iterable[tuple[str, str, str]]) -> None:
    """Count `(entity, from, to)` status changes once the transaction that made them commits."""
    if not enabled():
        return
    moves = [change for change in changes if change[1] != change[2]]  # a note on a timeline is not a move
    if moves:
        transaction.on_commit(lambda: _inc_transitions(moves))


def _inc_transitions(moves) -> None:
    for entity, from_status, to_status in moves:
        TRANSITIONS.labels(entity, from_status, to_status).inc()


def observe_ready(seconds: float) -> None:
    """A session reached READY `seconds` after its creation (recorded after commit)."""
    if enabled():
        transaction.on_commit(lambda: SESSION_READY_SECONDS.observe(max(0.0, seconds)))


def observe_pass(loop: str, result: str, seconds: float) -> None:
    if enabled():
        RECONCILE_PASSES.labels(loop, result).inc()
        RECONCILE_SECONDS.labels(loop).observe(seconds)


def observe_tick(loop: str, ok: bool, seconds: float) -> None:
    if enabled():
        LOOP_TICKS.labels(loop, "ok" if ok else "error").inc()
        LOOP_TICK_SECONDS.labels(loop).observe(seconds)


def observe_call(system: str, operation: str, outcome: str, seconds: float) -> None:
    if enabled():
        EXTERNAL_CALLS.labels(system, operation, outcome).inc()
        EXTERNAL_SECONDS.labels(system).observe(seconds)


def count(counter: Counter, *labels: str) -> None:
    if enabled():
        counter.labels(*labels).inc()


# --- read at scrape time ----------------------------------------------------------------------------


@dataclass
class Gauge:
    """One gauge family read at scrape time: `samples` maps label values (a tuple, in `labels` order) to a value."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()
    samples: dict = field(default_factory=dict)


_GAUGES: list[Callable[[], Iterable[Gauge]]] = []


def register_gauges(reader: Callable[[], Iterable[Gauge]]) -> None:
    """`reader()` returns the `Gauge`s it reads from the database; called by the web process on every scrape."""
    if reader not in _GAUGES:
        _GAUGES.append(reader)


class _ScrapeTimeCollector:
    """Every registered reader's gauges; a reader that fails is logged and left out (the rest are served)."""

    def collect(self):
        for reader in _GAUGES:
            try:
                gauges = list(reader())
            except Exception:
                logger.warning("metrics reader %s failed", getattr(reader, "__name__", reader), exc_info=True)
                continue
            for gauge in gauges:
                family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=list(gauge.labels))
                for label_values, value in gauge.samples.items():
                    family.add_metric([str(v) for v in label_values], float(value))
                yield family


class _ThisProcess:
    """Single-process mode: this process's own registry (its counters plus the process and platform collectors)."""

    def collect(self):
        return REGISTRY.collect()


def exposition() -> bytes:
    """The Prometheus text format of everything: recorded series (all processes' in multiprocess mode) and the
    scrape-time gauges."""
    registry = CollectorRegistry()
    if MULTIPROC_DIR:
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(_ScrapeTimeCollector())
    return generate_latest(registry)


def _loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def _refusal(request) -> HttpResponse | None:
    token = settings.LCM_METRICS_TOKEN
    if not token:
        if _loopback(request.META.get("REMOTE_ADDR")):
            return None
        detail = "metrics are served to loopback only unless LCM_METRICS_TOKEN is set"
        return JsonResponse({"detail": detail}, status=403)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        response = JsonResponse({"detail": "Authorization: Bearer <LCM_METRICS_TOKEN> required"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return JsonResponse({"detail": "wrong metrics token"}, status=403)
    return None


@require_GET
def metrics_view(request):
    """`GET /metrics`: the Prometheus text exposition (SPEC §11)."""
    if not enabled():
        return JsonResponse({"detail": "metrics are turned off (LCM_METRICS_ENABLED=0)"}, status=404)
    refused = _refusal(request)
    if refused is not None:
        return refused
    response = HttpResponse(exposition(), content_type=CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
