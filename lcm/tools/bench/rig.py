"""A running `Stack` with simulated CML workers and bookings: LCM's side (workers, definitions, sessions booked
through the services) and the candidate's (login and finish on the LDS simulator), driven until every session is
done, and the leak checks after. Shared by `bench_lifecycle` and tests/processes.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests
from django.conf import settings
from django.core.management.base import CommandError
from django.utils import timezone

from lcm import coordination
from lcm.celery import app
from lcm.tools.stack import Stack
from scheduling.selectors import worker_capacities
from sessions.booking import session_create
from sessions.definitions import definition_create
from sessions.models import LabletSession, UserSession
from sessions.states import SessionStatus
from workers.models import CMLWorker, LabRecord, Port
from workers.services import worker_create
from workers.states import LabStatus

DEMO_LAB = Path(settings.BASE_DIR) / "sessions" / "demo" / "demo-lab.yaml"
ACTOR = "bench"
S = SessionStatus
FINISHED = {S.ARCHIVED, S.TERMINATED, S.EXPIRED}


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
        self.http.headers["X-Sim-Token"] = stack.env.get("LCM_SIM_TOKEN", "")  # the simulators' control API
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
            # The stack's evidence store (moto's S3), read by `evidence_problems`.
            "LCM_EVIDENCE_ENDPOINT_URL": env.get("LCM_EVIDENCE_ENDPOINT_URL") or self.urls["moto"],
        }
        for name, value in values.items():
            setattr(target, name, value)

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
        """Book `count` ASAP sessions through the service (as the API does); returns their ids. Admission is off
        here: the lifecycle is measured, and a run may book more than its fleet holds at once (`bench_exam`
        measures admission)."""
        return [
            session_create(
                definition=definition, owner=f"{owner}-{index}@example.com", actor=ACTOR, on_capacity="off"
            ).pk
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
        problems = []
        sessions = list(
            LabletSession.objects.filter(pk__in=list(session_ids)).values("pk", "status", "cleanup_pending")
        )
        for row in sessions:
            if row["status"] not in FINISHED or row["cleanup_pending"]:
                problems.append(f"session {row['pk']} is {row['status']} (cleanup pending: {row['cleanup_pending']})")
        workers = list(CMLWorker.objects.filter(name__in=self.worker_names))
        problems += self._worker_leaks(workers)
        problems += self._cml_leaks(workers)
        problems += self._lds_leaks(except_lost_lds_creates)
        done = {"ENDED", "EXPIRED", "FAULTED"}
        for user_session in UserSession.objects.filter(lablet_session_id__in=list(session_ids)).exclude(
            status__in=done
        ):
            problems.append(f"user session {user_session.pk} is {user_session.status}")
        return problems

    @staticmethod
    def _worker_leaks(workers) -> list[str]:
        """Capacity, lab records and ports the workers still hold in LCM's tables."""
        problems = []
        for capacity in worker_capacities([w.pk for w in workers]).values():
            held = (capacity.sessions, capacity.cpu_used, capacity.memory_used, capacity.nodes_used)
            if any(held):
                problems.append(f"worker {capacity.name} still has capacity held: sessions/cpu/mem/nodes={held}")
        for lab in LabRecord.objects.filter(worker__in=workers):
            if lab.active_session_id:
                problems.append(f"lab record {lab.pk} ({lab.status}) is still bound to session {lab.active_session_id}")
            if lab.status not in (LabStatus.WIPED, LabStatus.DELETED):
                problems.append(f"lab record {lab.pk} is {lab.status}")
        stray_ports = Port.objects.filter(worker__in=workers).exclude(lab_record__status=LabStatus.WIPED)
        for port in stray_ports.select_related("lab_record"):
            problems.append(f"port {port.port} on {port.worker_id} held by a {port.lab_record.status} lab")
        return problems

    def _cml_leaks(self, workers) -> list[str]:
        """Labs the CML simulator still has: started, unknown to LCM, or kept while their record is not WIPED."""
        problems = []
        labs = {lab.cml_lab_id: lab for lab in LabRecord.objects.filter(worker__in=workers) if lab.cml_lab_id}
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
        return problems

    def _lds_leaks(self, except_lost_lds_creates: bool) -> list[str]:
        """LDS sessions not released or unknown to LCM."""
        problems = []
        known = set(UserSession.objects.exclude(lds_session_id="").values_list("lds_session_id", flat=True))
        excepted = set(self.lost_lds_creates()) if except_lost_lds_creates else set()
        for lds_id, lds in self.state("lds").get("sessions", {}).items():
            if lds_id in excepted:
                continue
            if not lds.get("is_finalized"):
                problems.append(f"LDS session {lds_id} is not released ({lds.get('state')})")
            if lds_id not in known:
                problems.append(f"LDS session {lds_id} is unknown to LCM")
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
            next_booking = _book(rig, definition, ids, count, rate, now, next_booking)
            statuses, counts = _poll(ids)
            polls += 1
            waits = rate is None or hold
            all_ready = len(ids) == count and counts.get(S.READY, 0) + _finished(counts) == count
            if waits and released_at is None and all_ready:
                released_at = timezone.now()
            if (not waits or released_at is not None) and _release(rig, pool, statuses, released):
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


def _book(rig: LifecycleRig, definition, ids: list, count: int, rate: float | None, now: float, next_at: float):
    """Book what is due into `ids`: all at once in a burst, else one every 1/`rate` s; returns the next booking time."""
    if rate is None and not ids:
        ids += rig.book(definition, count)
    while rate is not None and len(ids) < count and now >= next_at:
        ids += rig.book(definition, 1, owner=f"steady-{len(ids)}")
        next_at += 1.0 / rate
    return next_at


def _poll(ids: list) -> tuple[dict, dict[str, int]]:
    """`{id: status}` of the sessions and how many are in each status (one query)."""
    rows = LabletSession.objects.filter(pk__in=ids).values_list("pk", "status", "cleanup_pending")
    statuses = {}
    counts: dict[str, int] = {}
    for pk, status, cleanup_pending in rows:
        # A terminated or expired session is done only once its teardown is (SPEC §3.5).
        statuses[pk] = f"{status} (cleaning up)" if cleanup_pending else status
        counts[statuses[pk]] = counts.get(statuses[pk], 0) + 1
    return statuses, counts


def _release(rig: LifecycleRig, pool: ThreadPoolExecutor, statuses: dict, released: set) -> bool:
    """Let the candidates of READY sessions not released yet log in and finish; True when any were (one query)."""
    ready = [pk for pk, status in statuses.items() if status == S.READY and pk not in released]
    if not ready:
        return False
    for pk, lds_id in rig.lds_ids(ready).items():
        released.add(pk)
        pool.submit(rig.login_and_finish, lds_id)
    return True


def _finished(counts: dict) -> int:
    return sum(counts.get(status, 0) for status in FINISHED)
