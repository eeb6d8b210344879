"""`manage.py bench_lifecycle --sessions N [--rate R]`: full lifecycles through the real processes (SPEC §6.3).

Starts the production process set with the native launcher (`lcm.tools.stack`: Celery worker + beat,
the etcd watcher, gunicorn, etcd and zero-delay simulators), books N sessions on simulated CML
workers and drives each one, once READY, through the candidate's login and finish on the LDS
simulator's control API: LDS CloudEvents reach gunicorn's webhook, the session runs, is
collected, graded, torn down and archived, every step by the loops themselves. A burst books all
N at once and lets the candidates in once every session is READY (so the READY figures measure
instantiation alone); `--rate R` books R sessions/s and each candidate finishes as soon as READY
(arrivals and departures at the same rate), or with `--hold` waits like a burst.

Each figure is printed beside its peers measured in the same run: the same lifecycle with metrics off
(`LCM_METRICS_ENABLED=0`, no multiprocess directory, nothing scraping; the etcd-triggered run has them on
and scrapes `/metrics` every `--scrape-interval` seconds as Prometheus would), without evidence
(`LCM_EVIDENCE_ENABLED=0`: what collecting it costs per session, SPEC §9, in teardown seconds and CPU), and
with the polling ticks only (the watcher left out, so etcd changes wake nobody) — etcd-triggered versus
tick-driven. Figures:
- sessions/s to READY and to ARCHIVED: N over the time from the first booking (for ARCHIVED in a
  burst: from the candidates' release) to the last READY (ARCHIVED) transition;
- p50/p95/max from a session's creation to its READY transition (history timestamps), and p50/p95 of its
  teardown (STOPPING to ARCHIVED: where the evidence is collected before the wipe); evidence items stored;
- database transactions and rows written per session: `pg_stat_database` deltas of the
  benchmark database (xact_commit + xact_rollback; tup_inserted + tup_updated + tup_deleted) over
  the whole run, every process included (ticks too), the benchmark's own progress polling
  excluded (pg_stat_statements is not available, so statements are not counted one by one;
  Django runs each statement outside a transaction block as its own transaction);
- CPU-seconds per session from /proc/<pid>/stat (utime + stime, reaped children included) of the
  LCM processes (worker, beat, watcher, gunicorn), the simulators, etcd, the PostgreSQL backends
  serving the benchmark database (sampled on every progress poll, so backends that come and go
  count too), and this driver (booking through the service, as the API would), from the first
  booking to the last session done.

By default the run uses a scratch database (`<NAME>_bench`, created, migrated and dropped through
Django's test-database machinery), so real data is never touched; `--in-place` uses the current
database, which must be a test database (it is flushed between the two runs).
"""

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import override_settings

from lcm import coordination
from lcm.celery import app
from lcm.tools.bench import BenchRun
from lcm.tools.bench.rig import LifecycleRig, drive
from lcm.tools.processes import database_url_of, flush_redis_db, process_cpu_seconds
from lcm.tools.stack import SERVICE_ORDER, Stack, StackConfig, StackError
from sessions.models import LabletSession, SessionStatusChange
from sessions.states import SessionStatus

S = SessionStatus
STACK_PROCESSES = {
    "lcm": ("worker", "beat", "watcher", "web"),
    "simulators": ("simulators",),
    "etcd": ("etcd",),
}


# --- measurements -----------------------------------------------------------------------------


def db_counters() -> dict[str, int]:
    """This database's `pg_stat_database` counters (transactions and rows)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted, tup_returned + tup_fetched"
            " FROM pg_stat_database WHERE datname = current_database()"
        )
        xacts, written, read = cursor.fetchone()
    return {"xacts": xacts, "written": written, "read": read}


def backend_pids() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return [row[0] for row in cursor.fetchall()]


@dataclass
class CpuMeter:
    """CPU seconds of the stack's processes, PostgreSQL backends and this driver between two readings.

    PostgreSQL backends come and go during a run (a connection is recycled after `conn_max_age`,
    a web request may open its own), so they are sampled on every progress poll (`sample`): each
    backend counts from the first reading (0 when it appeared after `begin`) to the last one, and
    only what a backend spends after its last reading before it exits (under one poll) is missed.
    """

    stack: Stack
    start: dict = field(default_factory=dict)
    backends: dict = field(default_factory=dict)  # pid → [CPU at begin (0 if newer), CPU last read]
    finished: float = 0.0  # backends that ended and whose pid was reused

    def read(self) -> dict[str, float]:
        readings = {
            group: sum(self.stack.cpu_seconds(name) for name in names if name in self.stack.config.services)
            for group, names in STACK_PROCESSES.items()
        }
        readings["driver"] = process_cpu_seconds(os.getpid())
        return readings

    def sample(self) -> None:
        for pid in backend_pids():
            cpu = process_cpu_seconds(pid)
            entry = self.backends.get(pid)
            if entry is None:
                self.backends[pid] = [0.0, cpu]
            elif cpu < entry[1]:  # a new backend with an old one's pid
                self.finished += entry[1] - entry[0]
                self.backends[pid] = [0.0, cpu]
            else:
                entry[1] = cpu

    def begin(self) -> None:
        self.start = self.read()
        self.backends = {pid: [cpu, cpu] for pid in backend_pids() for cpu in (process_cpu_seconds(pid),)}
        self.finished = 0.0

    def delta(self) -> dict[str, float]:
        self.sample()
        end = self.read()
        result = {group: end[group] - self.start[group] for group in (*STACK_PROCESSES, "driver")}
        result["postgres"] = self.finished + sum(last - first for first, last in self.backends.values())
        return result


def evidence_items() -> int:
    """Evidence items stored (SPEC §9), read with SQL: this command's app (sessions) never imports grading."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM evidence_items")
        return cursor.fetchone()[0]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]  # nearest rank


def lifecycle_figures(ids: list, released_at=None) -> dict:
    """Throughput and latency from the database's own timestamps.

    To READY: from the first booking to the last READY; to ARCHIVED: from the first booking (steady)
    or from the candidates' release (burst) to the last ARCHIVED.
    """
    created = dict(LabletSession.objects.filter(pk__in=ids).values_list("pk", "created_at"))
    reached: dict[str, dict] = {S.READY: {}, S.STOPPING: {}, S.ARCHIVED: {}}
    rows = SessionStatusChange.objects.filter(
        session_id__in=ids, entity=SessionStatusChange.Entity.SESSION, to_status__in=list(reached)
    ).values_list("session_id", "to_status", "at")
    for session_id, status, at in rows:
        reached[status].setdefault(session_id, at)
    first = min(created.values())
    figures = {}
    for status, times in reached.items():
        if status == S.STOPPING:
            continue
        if times:
            origin = released_at if status == S.ARCHIVED and released_at else first
            span = (max(times.values()) - origin).total_seconds()
            figures[f"rate_{status.lower()}"] = len(times) / span if span > 0 else float("inf")
        figures[f"count_{status.lower()}"] = len(times)
    latencies = [(at - created[pk]).total_seconds() for pk, at in reached[S.READY].items()]
    figures["ready_p50"] = percentile(latencies, 0.50)
    figures["ready_p95"] = percentile(latencies, 0.95)
    figures["ready_max"] = max(latencies) if latencies else float("nan")
    # Teardown (STOPPING → ARCHIVED): where evidence is collected, before the lab is wiped.
    teardowns = [
        (at - reached[S.STOPPING][pk]).total_seconds()
        for pk, at in reached[S.ARCHIVED].items()
        if pk in reached[S.STOPPING]
    ]
    figures["teardown_p50"] = percentile(teardowns, 0.50)
    figures["teardown_p95"] = percentile(teardowns, 0.95)
    return figures


def metrics_runs(rounds: int) -> list[tuple[str, bool]]:
    """The runs after the first (metrics on): `metrics off`, then per further round an off and an on run in the
    mirrored order (on, off | off, on | on, off ...), so a drift over the benchmark (a cold first run, a busy
    machine) weighs on both sides alike."""
    order = [("metrics off", False)]
    for index in range(2, rounds + 1):
        pair = [(f"metrics off #{index}", False), (f"metrics on #{index}", True)]
        order += pair if index % 2 == 0 else pair[::-1]
    return order


def evidence_summary(with_it: dict, without: dict) -> str:
    """What collecting evidence (SPEC §9) costs per session: the etcd-triggered run beside the one without it."""
    extra_cpu = with_it["cpu_per_session"]["total"] - without["cpu_per_session"]["total"]
    extra_lcm = with_it["cpu_per_session"]["lcm"] - without["cpu_per_session"]["lcm"]
    return (
        f"evidence per session: {with_it['teardown_p50'] - without['teardown_p50']:+.2f} s teardown p50 "
        f"({with_it['teardown_p50']:.2f} vs {without['teardown_p50']:.2f} s), "
        f"{with_it['teardown_p95'] - without['teardown_p95']:+.2f} s p95; {extra_cpu:+.3f} CPU-s in all "
        f"({extra_lcm:+.3f} in LCM's processes); {with_it['evidence_items_per_session']:.1f} items stored"
    )


def metrics_summary(runs: dict, scrape_interval: float) -> str:
    """CPU per session with metrics on beside off: the mean of each side's runs (total and LCM processes)."""
    on = [f for n, f in runs.items() if n == "etcd-triggered" or n.startswith("metrics on")]
    off = [f for n, f in runs.items() if n.startswith("metrics off")]

    def mean(side, group):
        return sum(f["cpu_per_session"][group] for f in side) / len(side)

    total_on, total_off, lcm_on, lcm_off = mean(on, "total"), mean(off, "total"), mean(on, "lcm"), mean(off, "lcm")
    scrapes = sum(f["metrics"]["scrapes"] for f in on)
    updates = sum(f["metrics"]["updates_per_session"] for f in on) / len(on)
    scrape_ms = sum(f["metrics"]["scrape_ms"] or 0 for f in on) / len(on)
    cost_us = update_cost_us()
    per_session_ms = updates * cost_us / 1000
    return (
        f"CPU-s / session with metrics on vs off ({len(on)} + {len(off)} runs): total {total_on:.4f} vs "
        f"{total_off:.4f} ({_change(total_on, total_off)}), LCM processes {lcm_on:.4f} vs {lcm_off:.4f} "
        f"({_change(lcm_on, lcm_off)}); /metrics scraped {scrapes} times, every {scrape_interval:g} s\n"
        f"metrics recorded per session: {updates:.0f} updates x {cost_us:.1f} us (one update, multiprocess, timed "
        f"here) = {per_session_ms:.2f} ms CPU, {per_session_ms / 1000 / lcm_off * 100:.2f} % of the LCM processes' "
        f"CPU per session with metrics off; one scrape takes {scrape_ms:.0f} ms (wall)"
    )


def _change(value: float, base: float) -> str:
    return f"{(value - base) / base * 100:+.1f} %" if base else "n/a"


class Scraper:
    """Scrapes the stack's `/metrics` every `interval` seconds (0: never), as Prometheus would, so the metrics-on
    run pays for its scrapes too."""

    def __init__(self, web_url: str, interval: float):
        self.url, self.interval = f"{web_url}/metrics", interval
        self.next_at = time.monotonic() + interval
        self.scrapes, self.last_size, self.seconds = 0, 0, 0.0
        self.http = requests.Session()

    def maybe(self) -> None:
        if not self.interval or time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + self.interval
        self.scrape()

    def scrape(self) -> str:
        started = time.monotonic()
        response = self.http.get(self.url, timeout=10)
        response.raise_for_status()
        self.seconds += time.monotonic() - started
        self.scrapes, self.last_size = self.scrapes + 1, len(response.content)
        return response.text

    def updates(self) -> float:
        """How many times the processes recorded a metric (counter increments and histogram observations)."""
        total = 0.0
        for line in self.scrape().splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name.startswith("lcm_") and name.endswith(("_total", "_count")):
                total += float(line.rsplit(" ", 1)[1])
        return total


_UPDATE_COST_SCRIPT = """
import time
from prometheus_client import Counter, Histogram
calls = Counter("calls", "", ["system", "operation", "outcome"])
seconds = Histogram("seconds", "", ["system"])
n = 20000
started = time.process_time()
for _ in range(n):
    calls.labels("cml", "lab_state", "ok").inc()
    seconds.labels("cml").observe(0.01)
print((time.process_time() - started) / (2 * n) * 1e6)
"""


def update_cost_us() -> float:
    """CPU microseconds of one metric update in multiprocess mode (mmap files), timed in a child process."""
    with tempfile.TemporaryDirectory() as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        done = subprocess.run(
            [sys.executable, "-c", _UPDATE_COST_SCRIPT], env=env, capture_output=True, text=True, check=True
        )
    return float(done.stdout.strip())


# --- the command ------------------------------------------------------------------------------


class LifecycleBench(BenchRun):
    """One run of `bench_lifecycle`: the etcd-triggered run and its ticks-only peer, then the figures."""

    def run(self, options) -> None:
        if options["sessions"] < 1 or options["workers"] < 1:
            raise CommandError("--sessions and --workers must be at least 1")
        if options["rate"] is not None and options["rate"] <= 0:
            raise CommandError("--rate must be positive")
        if connection.vendor != "postgresql":
            raise CommandError("bench_lifecycle needs PostgreSQL (set DATABASE_URL)")
        scratch = not options["in_place"]
        if not scratch and not connection.settings_dict["NAME"].startswith("test"):
            raise CommandError("--in-place flushes the database between runs: use it on a test database only")
        lcm_logger = logging.getLogger("lcm")
        log_level = lcm_logger.level
        if options["verbosity"] < 2:
            lcm_logger.setLevel(logging.WARNING)  # this process books; its per-change lines are noise
        old_name = connection.settings_dict["NAME"]
        if scratch:
            connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{old_name}_bench"
            connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        broker_url = app.conf.broker_url
        try:
            # This process is pointed at each stack in turn (`LifecycleRig.point_settings`); undone afterwards.
            with override_settings():
                runs = self._runs(options)
        finally:
            app.conf.broker_url = broker_url
            coordination.reset_coordinator()
            lcm_logger.setLevel(log_level)
            if scratch and not options["keep_db"]:
                connection.creation.destroy_test_db(old_name, verbosity=0)
        self._report(runs, options)

    def _runs(self, options) -> dict:
        """The etcd-triggered run (metrics on), its metrics-off peers, the evidence-off peer, then the ticks-only peer
        (flushed between)."""
        if options["warmup"] > 0:  # a first run is slower (cold database, caches): measure none of it
            self._run({**options, "sessions": options["warmup"]}, watcher=True, metrics=False)
            call_command("flush", interactive=False, verbosity=0)
        runs = {"etcd-triggered": self._run(options, watcher=True)}
        if not options["no_metrics_peer"]:
            for name, metrics in metrics_runs(options["metrics_rounds"]):
                call_command("flush", interactive=False, verbosity=0)
                runs[name] = self._run(options, watcher=True, metrics=metrics)
        if not options["no_evidence_peer"]:
            call_command("flush", interactive=False, verbosity=0)
            runs["evidence off (peer)"] = self._run(options, watcher=True, evidence=False)
        if not options["no_peer"]:
            call_command("flush", interactive=False, verbosity=0)
            runs["ticks only (peer)"] = self._run(options, watcher=False)
        return runs

    def _run(self, options, *, watcher: bool, metrics=True, evidence=True) -> dict:  # structure: long (one run)
        count, rate = options["sessions"], options["rate"]
        interval = options["interval"] or settings.LCM_LOOP_LABLETS_SECONDS
        timeout = options["timeout"] or 120 + count / 2
        name = ("watch" if metrics else "watch, metrics off") if watcher else "ticks"
        name += "" if evidence else ", no evidence"
        pace = f"at {rate:.1f}/s" if rate else "in one burst"
        self.stderr.write(f"== {name}: {count} sessions {pace}")
        database_url = database_url_of(connection.settings_dict)
        state_dir = tempfile.mkdtemp(prefix=f"lcm-bench-{name}-")
        broker_url = f"redis://127.0.0.1:6379/{options['redis_db']}"
        config = StackConfig.on_free_ports(
            state_dir=state_dir,
            database_url=database_url,
            broker_url=broker_url,
            zero_delay=True,
            collectstatic=False,
            worker_pool=options["pool"],
            worker_concurrency=options["concurrency"],
            services=tuple(s for s in SERVICE_ORDER if watcher or s != "watcher"),
            env={
                "LCM_LOOP_PLACEMENT_SECONDS": str(interval),
                "LCM_LOOP_LABLETS_SECONDS": str(interval),
                "LCM_EVIDENCE_ENABLED": "1" if evidence else "0",  # SPEC §9: its cost is the difference
                "LCM_METRICS_ENABLED": "1" if metrics else "0",
            },
        )
        flush_redis_db(broker_url)
        stack = Stack(config, die_with_parent=True)
        try:
            stack.start()
        except StackError as exc:
            raise CommandError(str(exc)) from None
        try:
            rig = LifecycleRig(stack)
            rig.point_settings()
            rig.add_workers(options["workers"])
            definition = rig.definition()
            meter = CpuMeter(stack)
            scraper = Scraper(stack.urls["web"], options["scrape_interval"] if metrics else 0)
            before = db_counters()
            meter.begin()
            result = drive(
                rig, definition, count, rate=rate, timeout=timeout, progress=self.stderr.write, hold=options["hold"],
                on_poll=lambda: (meter.sample(), scraper.maybe()),
            )  # fmt: skip
            cpu = meter.delta()
            updates = scraper.updates() if metrics else 0.0
            figures = lifecycle_figures(result.ids, result.released_at)
            figures["statuses"] = rig.statuses(result.ids)
            figures["evidence_items_per_session"] = evidence_items() / count
        finally:
            stack.stop()
        after = db_counters()  # after the stop: every backend has exited and flushed its statistics
        figures["xacts_per_session"] = (after["xacts"] - before["xacts"] - result.polls) / count
        figures["rows_written_per_session"] = (after["written"] - before["written"]) / count
        figures["cpu_per_session"] = {group: seconds / count for group, seconds in cpu.items()}
        figures["cpu_per_session"]["total"] = sum(cpu.values()) / count
        figures["metrics"] = {
            "enabled": metrics,
            "scrapes": scraper.scrapes,
            "scrape_bytes": scraper.last_size,
            "scrape_ms": scraper.seconds / scraper.scrapes * 1000 if scraper.scrapes else None,
            "updates_per_session": updates / count,
        }
        return figures

    def _report(self, runs: dict, options) -> None:
        if options["json"]:
            self.stdout.write(json.dumps(runs, indent=2, default=str))
            return
        names = list(runs)
        mode = f"steady {options['rate']:.1f} sessions/s" if options["rate"] else "burst"
        if options["rate"] and options["hold"]:
            mode += ", candidates held until every session is READY"
        elif options["rate"]:
            mode += ", each candidate finishing as soon as READY"
        self.stdout.write(
            f"bench_lifecycle: {options['sessions']} sessions ({mode}), {options['workers']} workers, "
            f"Celery {options['pool']} x{options['concurrency']}, zero-delay simulators"
        )
        header = f"{'figure':<42}" + "".join(f"{n:>22}" for n in names)
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        rows = [
            ("sessions/s to READY", lambda f: f.get("rate_ready"), "{:.1f}"),
            ("sessions/s to ARCHIVED", lambda f: f.get("rate_archived"), "{:.1f}"),
            ("creation -> READY p50 (s)", lambda f: f["ready_p50"], "{:.2f}"),
            ("creation -> READY p95 (s)", lambda f: f["ready_p95"], "{:.2f}"),
            ("creation -> READY max (s)", lambda f: f["ready_max"], "{:.2f}"),
            ("STOPPING -> ARCHIVED p50 (s)", lambda f: f["teardown_p50"], "{:.2f}"),
            ("STOPPING -> ARCHIVED p95 (s)", lambda f: f["teardown_p95"], "{:.2f}"),
            ("evidence items / session", lambda f: f["evidence_items_per_session"], "{:.1f}"),
            ("DB transactions / session", lambda f: f["xacts_per_session"], "{:.0f}"),
            ("DB rows written / session", lambda f: f["rows_written_per_session"], "{:.0f}"),
            ("CPU-s / session, total", lambda f: f["cpu_per_session"]["total"], "{:.3f}"),
            ("  LCM (worker, beat, watcher, gunicorn)", lambda f: f["cpu_per_session"]["lcm"], "{:.3f}"),
            ("  PostgreSQL backends", lambda f: f["cpu_per_session"]["postgres"], "{:.3f}"),
            ("  simulators", lambda f: f["cpu_per_session"]["simulators"], "{:.3f}"),
            ("  etcd", lambda f: f["cpu_per_session"]["etcd"], "{:.3f}"),
            ("  benchmark driver (booking, LDS calls)", lambda f: f["cpu_per_session"]["driver"], "{:.3f}"),
            ("final statuses", lambda f: json.dumps(f["statuses"], sort_keys=True), "{}"),
        ]
        for label, getter, fmt in rows:
            cells = []
            for name in names:
                value = getter(runs[name])
                cells.append(f"{'-' if value is None else fmt.format(value):>22}")
            self.stdout.write(f"{label:<42}" + "".join(cells))
        if "evidence off (peer)" in runs:
            self.stdout.write(evidence_summary(runs["etcd-triggered"], runs["evidence off (peer)"]))
        if "metrics off" in runs:
            self.stdout.write(metrics_summary(runs, options["scrape_interval"]))
        if "ticks only (peer)" in runs:
            watch, ticks = runs["etcd-triggered"], runs["ticks only (peer)"]
            self.stdout.write(
                f"p95 creation -> READY: {watch['ready_p95']:.2f} s etcd-triggered vs {ticks['ready_p95']:.2f} s "
                f"tick-driven (interval {options['interval'] or settings.LCM_LOOP_LABLETS_SECONDS:g} s); "
                f"sessions/s to READY: {watch.get('rate_ready', 0):.1f} vs {ticks.get('rate_ready', 0):.1f}"
            )
