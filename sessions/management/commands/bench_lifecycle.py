"""`manage.py bench_lifecycle --sessions N [--rate R]`: full lifecycles through the real processes (SPEC §6.3).

Starts the production process set with the native launcher (`lcm.tools.stack`: Celery worker + beat,
the etcd watcher, gunicorn, etcd and zero-delay simulators), books N sessions on simulated CML
workers and drives each one, once READY, through the candidate's login and finish on the LDS
simulator's control API: LDS CloudEvents reach gunicorn's webhook, the session runs, is
collected, graded, torn down and archived, every step by the loops themselves. A burst books all
N at once and lets the candidates in once every session is READY (so the READY figures measure
instantiation alone); `--rate R` books R sessions/s and each candidate finishes as soon as READY
(arrivals and departures at the same rate), or with `--hold` waits like a burst.

Each figure is printed beside its peer measured in the same run: the same lifecycle with the
polling ticks only (the watcher left out, so etcd changes wake nobody) — etcd-triggered versus
tick-driven. Figures:
- sessions/s to READY and to ARCHIVED: N over the time from the first booking (for ARCHIVED in a
  burst: from the candidates' release) to the last READY (ARCHIVED) transition;
- p50/p95/max from a session's creation to its READY transition (history timestamps);
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
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test.utils import override_settings
from django.utils import timezone

from lcm import coordination
from lcm.tools.processes import database_url_of, flush_redis_db, process_cpu_seconds
from lcm.tools.stack import SERVICE_ORDER, Stack, StackConfig, StackError
from sessions.models import LabletSession, SessionStatusChange, UserSession
from sessions.services import definition_create, session_create
from sessions.states import SessionStatus
from workers.models import CMLWorker
from workers.services import worker_create

DEMO_LAB = Path(__file__).resolve().parents[2] / "demo" / "demo-lab.yaml"
ACTOR = "bench"
S = SessionStatus
FINISHED = {S.ARCHIVED, S.TERMINATED, S.EXPIRED}
STACK_PROCESSES = {
    "lcm": ("worker", "beat", "watcher", "web"),
    "simulators": ("simulators",),
    "etcd": ("etcd",),
}


# --- a stack with simulated workers, shared by this command and tests/processes ------------------


class LifecycleRig:
    """Simulated CML workers and bookings against a running `Stack`, with the LDS-side driving and leak checks.

    This process plays the web role for its own writes: its settings are pointed at the stack
    (broker, etcd, simulators) so a booking made here is projected into the stack's etcd like one
    made through gunicorn.
    """

    def __init__(self, stack: Stack, *, http_timeout: float = 10.0):
        self.stack = stack
        self.urls = stack.urls
        self.http = requests.Session()
        self.http_timeout = http_timeout
        self.worker_names: list[str] = []

    def point_settings(self, target=settings) -> dict:
        """Point `target` (Django settings or pytest-django's `settings` fixture) at the stack."""
        env = self.stack.env
        values = {
            "CELERY_BROKER_URL": env["CELERY_BROKER_URL"],
            "LCM_ETCD_ENDPOINTS": env["LCM_ETCD_ENDPOINTS"],
            "LCM_LDS_BASE_URL": self.urls["lds"],
            "LCM_GRADING_BASE_URL": self.urls["grading"],
            "WEBHOOK_SECRET": env["LCM_WEBHOOK_SECRET"],
        }
        for name, value in values.items():
            setattr(target, name, value)
        from lcm.celery import app

        app.conf.broker_url = values["CELERY_BROKER_URL"]
        coordination.reset_coordinator()
        return values

    # -- fleet and definitions ---------------------------------------------------------------

    def add_workers(self, count: int, *, prefix: str = "bench", **capacity) -> list[CMLWorker]:
        """`count` RUNNING workers, each backed by a new virtual CML in the simulator."""
        capacity = {"cpu_cores": 512, "memory_gb": 2048, "storage_gb": 20_000, "max_nodes": 10_000} | capacity
        workers = []
        for index in range(count):
            name = f"{prefix}-{len(self.worker_names) + 1}"
            answer = self._post(
                "cml",
                "/_sim/workers",
                {"name": name, "username": settings.LCM_CML_USERNAME, "password": settings.LCM_CML_PASSWORD},
            )
            workers.append(
                worker_create(
                    name=name,
                    actor=ACTOR,
                    status="RUNNING",
                    cml_base_url=answer["base_url"],
                    cml_version="2.9.0",
                    service_status="READY",
                    license_type="ENTERPRISE",
                    reason=f"virtual CML {index + 1} of {count}",
                    **capacity,
                )
            )
            self.worker_names.append(name)
        return workers

    def definition(self, *, name: str = "bench-lab", grading: bool = True):
        return definition_create(
            actor=ACTOR,
            name=name,
            version="1.0.0",
            lab_yaml=DEMO_LAB.read_text(),
            cpu_cores=1,
            memory_gb=1,
            storage_gb=1,
            license_affinity=["ENTERPRISE"],
            max_duration_minutes=120,
            form_qualified_name="LCM-Bench-1.0",
            grading_enabled=grading,
        )

    def book(self, definition, count: int = 1, *, owner: str = "candidate") -> list:
        """Book `count` ASAP sessions through the service (as the API does); returns their ids."""
        return [
            session_create(definition=definition, owner=f"{owner}-{index}@example.com", actor=ACTOR).pk
            for index in range(count)
        ]

    # -- the candidate, on the LDS side ------------------------------------------------------

    def lds_ids(self, session_ids) -> dict:
        """`{session id: LDS session id}` of the given sessions' user sessions."""
        rows = UserSession.objects.filter(lablet_session_id__in=list(session_ids)).exclude(lds_session_id="")
        return dict(rows.order_by("created_at").values_list("lablet_session_id", "lds_session_id"))

    def login_and_finish(self, lds_session_id: str) -> None:
        """The candidate opens the lab and finishes at once (LDS emits running, then ended)."""
        self._post("lds", f"/_sim/sessions/{lds_session_id}/login", {})
        self._post("lds", f"/_sim/sessions/{lds_session_id}/finish", {})

    def faults(self, rules: list[dict], simulators=("cml", "lds", "grading")) -> None:
        for name in simulators:
            self._post(name, "/_sim/faults", rules)

    def clear_faults(self, simulators=("cml", "lds", "grading")) -> None:
        for name in simulators:
            self.http.delete(f"{self.urls[name]}/_sim/faults", timeout=self.http_timeout).raise_for_status()

    def state(self, simulator: str) -> dict:
        response = self.http.get(f"{self.urls[simulator]}/_sim/state", timeout=self.http_timeout)
        response.raise_for_status()
        return response.json()

    def _post(self, simulator: str, path: str, body) -> dict:
        response = self.http.post(f"{self.urls[simulator]}{path}", json=body, timeout=self.http_timeout)
        response.raise_for_status()
        return response.json()

    # -- checks --------------------------------------------------------------------------------

    def statuses(self, session_ids) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in LabletSession.objects.filter(pk__in=list(session_ids)).values_list("status", flat=True):
            counts[status] = counts.get(status, 0) + 1
        return counts

    def lost_lds_creates(self) -> list[str]:
        """LDS sessions LCM never learned of, never launched: made by a create whose answer was lost.

        The LDS API has no idempotency key and no lookup by the caller's reference, so when the
        process that sent `POST /lab_session` dies before recording the answer, nothing can find
        that session again. A crash test counts these apart (see `leaks`).
        """
        known = set(UserSession.objects.exclude(lds_session_id="").values_list("lds_session_id", flat=True))
        return [
            lds_id
            for lds_id, lds in self.state("lds").get("sessions", {}).items()
            if lds_id not in known and lds.get("state") == "SESSION_PENDING"
        ]

    def leaks(self, session_ids, *, except_lost_lds_creates: bool = False) -> list[str]:
        """Everything a finished set of sessions still holds (empty when nothing leaked).

        Ports stay with a WIPED lab kept for reuse (SPEC §2.4), so ports of WIPED labs are not
        leaks; every other port, a lab still bound to a session, capacity held on a worker, a lab
        left started (or unknown to LCM) in CML and an LDS session not released are.
        `except_lost_lds_creates` leaves out the LDS sessions of `lost_lds_creates()`.
        """
        from scheduling.selectors import worker_capacities
        from workers.models import LabRecord, Port
        from workers.states import LabStatus

        problems = []
        sessions = list(
            LabletSession.objects.filter(pk__in=list(session_ids)).values("pk", "status", "cleanup_pending")
        )
        for row in sessions:
            if row["status"] not in FINISHED or row["cleanup_pending"]:
                problems.append(f"session {row['pk']} is {row['status']} (cleanup pending: {row['cleanup_pending']})")
        workers = list(CMLWorker.objects.filter(name__in=self.worker_names))
        for capacity in worker_capacities([w.pk for w in workers]).values():
            held = (capacity.sessions, capacity.cpu_used, capacity.memory_used, capacity.nodes_used)
            if any(held):
                problems.append(f"worker {capacity.name} still has capacity held: sessions/cpu/mem/nodes={held}")
        labs = {lab.cml_lab_id: lab for lab in LabRecord.objects.filter(worker__in=workers) if lab.cml_lab_id}
        for lab in LabRecord.objects.filter(worker__in=workers):
            if lab.active_session_id:
                problems.append(f"lab record {lab.pk} ({lab.status}) is still bound to session {lab.active_session_id}")
            if lab.status not in (LabStatus.WIPED, LabStatus.DELETED):
                problems.append(f"lab record {lab.pk} is {lab.status}")
        stray_ports = Port.objects.filter(worker__in=workers).exclude(lab_record__status=LabStatus.WIPED)
        for port in stray_ports.select_related("lab_record"):
            problems.append(f"port {port.port} on {port.worker_id} held by a {port.lab_record.status} lab")
        cml_workers = self.state("cml").get("workers", {})
        for name in self.worker_names:
            for lab_id, lab in (cml_workers.get(name) or {}).get("labs", {}).items():
                record = labs.get(lab_id)
                if lab["state"] == "STARTED":
                    problems.append(f"CML lab {lab_id} on {name} is still started")
                if record is None:
                    problems.append(f"CML lab {lab_id} ({lab.get('title')}) on {name} is unknown to LCM")
                elif record.status != LabStatus.WIPED:
                    problems.append(f"CML lab {lab_id} on {name} still exists but its record is {record.status}")
        known = set(UserSession.objects.exclude(lds_session_id="").values_list("lds_session_id", flat=True))
        excepted = set(self.lost_lds_creates()) if except_lost_lds_creates else set()
        for lds_id, lds in self.state("lds").get("sessions", {}).items():
            if lds_id in excepted:
                continue
            if not lds.get("is_finalized"):
                problems.append(f"LDS session {lds_id} is not released ({lds.get('state')})")
            if lds_id not in known:
                problems.append(f"LDS session {lds_id} is unknown to LCM")
        done = {"ENDED", "EXPIRED", "FAULTED"}
        for user_session in UserSession.objects.filter(lablet_session_id__in=list(session_ids)).exclude(
            status__in=done
        ):
            problems.append(f"user session {user_session.pk} is {user_session.status}")
        return problems


@dataclass
class DriveResult:
    ids: list
    polls: int  # progress queries made, discounted from the database's counters
    released_at: datetime | None  # burst: when the candidates were let in (every session READY)


def drive(
    rig: LifecycleRig,
    definition,
    count: int,
    *,
    rate: float | None,
    timeout: float,
    progress=None,
    booked=None,
    on_poll=None,
    hold: bool = False,
):
    """Book `count` sessions and drive them until every one is done; raises CommandError after `timeout`.

    Burst (`rate` None): all are booked at once and the candidates start only once every session
    is READY, so the READY figures measure instantiation alone. Steady: one booking every 1/`rate`
    seconds and each candidate starts and finishes as soon as the session is READY (arrivals and
    departures at the same rate, the steady state of a busy exam day); with `hold`, the candidates
    wait as in a burst, so only instantiation runs while sessions arrive. `booked`: sessions booked
    already (a burst), driven from where they are. `on_poll()` is called on every round (tests
    use it to kill and restart processes while the lifecycles run).
    """
    ids: list = list(booked or [])
    released: set = set()
    released_at = None
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bench-lds")
    started = time.monotonic()
    deadline = started + timeout
    next_booking = started
    last_report = 0.0
    polls = 0
    try:
        while True:
            now = time.monotonic()
            if rate is None and not ids:
                ids = rig.book(definition, count)
            while rate is not None and len(ids) < count and now >= next_booking:
                ids += rig.book(definition, 1, owner=f"steady-{len(ids)}")
                next_booking += 1.0 / rate
            rows = LabletSession.objects.filter(pk__in=ids).values_list("pk", "status", "cleanup_pending")
            statuses = {}
            counts: dict[str, int] = {}
            for pk, status, cleanup_pending in rows:
                # A terminated or expired session is done only once its teardown is (SPEC §3.5).
                statuses[pk] = f"{status} (cleaning up)" if cleanup_pending else status
                counts[statuses[pk]] = counts.get(statuses[pk], 0) + 1
            polls += 1
            waits = rate is None or hold
            all_ready = len(ids) == count and counts.get(S.READY, 0) + _finished(counts) == count
            if waits and released_at is None and all_ready:
                released_at = timezone.now()
            if not waits or released_at is not None:
                ready = [pk for pk, status in statuses.items() if status == S.READY and pk not in released]
                if ready:
                    for pk, lds_id in rig.lds_ids(ready).items():
                        released.add(pk)
                        pool.submit(rig.login_and_finish, lds_id)
                    polls += 1
            if len(ids) == count and _finished(counts) == count:
                return DriveResult(ids, polls, released_at)
            if progress and now - last_report >= 5:
                progress(f"  {now - started:5.0f} s  {json.dumps(counts, sort_keys=True)}")
                last_report = now
            if now > deadline:
                raise CommandError(f"not every session finished within {timeout:.0f} s: {counts}")
            if on_poll is not None:
                on_poll()
            time.sleep(0.25)  # progress polling is the benchmark's own load: kept light
    finally:
        pool.shutdown(wait=True)


def _finished(counts: dict) -> int:
    return sum(counts.get(status, 0) for status in FINISHED)


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
    reached: dict[str, dict] = {S.READY: {}, S.ARCHIVED: {}}
    rows = SessionStatusChange.objects.filter(
        session_id__in=ids, entity=SessionStatusChange.Entity.SESSION, to_status__in=list(reached)
    ).values_list("session_id", "to_status", "at")
    for session_id, status, at in rows:
        reached[status].setdefault(session_id, at)
    first = min(created.values())
    figures = {}
    for status, times in reached.items():
        if times:
            origin = released_at if status == S.ARCHIVED and released_at else first
            span = (max(times.values()) - origin).total_seconds()
            figures[f"rate_{status.lower()}"] = len(times) / span if span > 0 else float("inf")
        figures[f"count_{status.lower()}"] = len(times)
    latencies = [(at - created[pk]).total_seconds() for pk, at in reached[S.READY].items()]
    figures["ready_p50"] = percentile(latencies, 0.50)
    figures["ready_p95"] = percentile(latencies, 0.95)
    figures["ready_max"] = max(latencies) if latencies else float("nan")
    return figures


# --- the command ------------------------------------------------------------------------------


class Command(BaseCommand):
    help = (
        "Benchmark full session lifecycles through the real worker/beat/watcher processes against zero-delay "
        "simulators; every figure beside its peer (ticks only, no watcher) measured in the same run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sessions", type=int, default=100, help="sessions to run (default 100)")
        parser.add_argument("--rate", type=float, help="book this many sessions per second instead of a burst")
        parser.add_argument(
            "--hold",
            action="store_true",
            help="with --rate: candidates start only once every session is READY (instantiation load only)",
        )
        parser.add_argument("--workers", type=int, default=10, help="simulated CML workers (default 10)")
        parser.add_argument(
            "--interval", type=float, help="loop tick interval in seconds (default: LCM_LOOP_LABLETS_SECONDS)"
        )
        parser.add_argument("--pool", choices=["threads", "prefork"], default="prefork", help="Celery worker pool")
        parser.add_argument("--concurrency", type=int, default=4, help="Celery worker concurrency (default 4)")
        parser.add_argument("--redis-db", type=int, default=14, help="Redis database number for the broker")
        parser.add_argument("--timeout", type=float, help="seconds each run may take (default: 120 + N/2)")
        parser.add_argument("--no-peer", action="store_true", help="skip the ticks-only peer run")
        parser.add_argument("--in-place", action="store_true", help="use the current (test) database")
        parser.add_argument("--keep-db", action="store_true", help="keep the scratch database afterwards")
        parser.add_argument("--json", action="store_true", help="print the figures as JSON")

    def handle(self, *args, **options):
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
        from lcm.celery import app

        broker_url = app.conf.broker_url
        try:
            # This process is pointed at each stack in turn (`LifecycleRig.point_settings`); undone afterwards.
            with override_settings():
                runs = {"etcd-triggered": self._run(options, watcher=True)}
                if not options["no_peer"]:
                    call_command("flush", interactive=False, verbosity=0)
                    runs["ticks only (peer)"] = self._run(options, watcher=False)
        finally:
            app.conf.broker_url = broker_url
            coordination.reset_coordinator()
            lcm_logger.setLevel(log_level)
            if scratch and not options["keep_db"]:
                connection.creation.destroy_test_db(old_name, verbosity=0)
        self._report(runs, options)

    def _run(self, options, *, watcher: bool) -> dict:
        count, rate = options["sessions"], options["rate"]
        interval = options["interval"] or settings.LCM_LOOP_LABLETS_SECONDS
        timeout = options["timeout"] or 120 + count / 2
        name = "watch" if watcher else "ticks"
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
            env={"LCM_LOOP_PLACEMENT_SECONDS": str(interval), "LCM_LOOP_LABLETS_SECONDS": str(interval)},
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
            before = db_counters()
            meter.begin()
            result = drive(
                rig, definition, count, rate=rate, timeout=timeout, progress=self.stderr.write, hold=options["hold"],
                on_poll=meter.sample,
            )  # fmt: skip
            cpu = meter.delta()
            figures = lifecycle_figures(result.ids, result.released_at)
            figures["statuses"] = rig.statuses(result.ids)
        finally:
            stack.stop()
        after = db_counters()  # after the stop: every backend has exited and flushed its statistics
        figures["xacts_per_session"] = (after["xacts"] - before["xacts"] - result.polls) / count
        figures["rows_written_per_session"] = (after["written"] - before["written"]) / count
        figures["cpu_per_session"] = {group: seconds / count for group, seconds in cpu.items()}
        figures["cpu_per_session"]["total"] = sum(cpu.values()) / count
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
        if len(names) == 2:
            watch, ticks = (runs[n] for n in names)
            self.stdout.write(
                f"p95 creation -> READY: {watch['ready_p95']:.2f} s etcd-triggered vs {ticks['ready_p95']:.2f} s "
                f"tick-driven (interval {options['interval'] or settings.LCM_LOOP_LABLETS_SECONDS:g} s); "
                f"sessions/s to READY: {watch.get('rate_ready', 0):.1f} vs {ticks.get('rate_ready', 0):.1f}"
            )
