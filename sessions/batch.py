"""Batch placement: many sessions → SCHEDULED in one transaction, each onto the worker a scheduler
tick chose for it (`scheduling.scheduler`), with `session_transition`'s guarantees."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import Case, UUIDField, Value, When
from django.utils import timezone

from lcm.events import publish_changes
from lcm.fsm import actor_name, record_changes
from scheduling.capacity import Demand, rejection_reason
from scheduling.selectors import worker_capacities
from sessions.models import LabletDefinition, LabletSession, SessionStatusChange
from sessions.states import SESSION_TRANSITIONS, SessionStatus
from workers.models import CMLWorker
from workers.states import WorkerStatus

S = SessionStatus

# States a session may be scheduled from, read from the transition table (SPEC §2.2: PENDING only).
_SCHEDULABLE_FROM = sorted(source for source, targets in SESSION_TRANSITIONS.items() if S.SCHEDULED in targets)


@dataclass
class ScheduleOutcome:
    """What `sessions_schedule_batch` did with each assignment, in the order given."""

    placed: list[tuple[str, str]] = field(default_factory=list)  # (session id, worker id)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (session id, worker id, why)
    # Workers that refused an assignment (full, not RUNNING, gone): the caller's view of them is stale.
    stale_workers: set[str] = field(default_factory=set)


def sessions_schedule_batch(assignments, *, actor, now: datetime | None = None) -> ScheduleOutcome:
    """→ SCHEDULED for many sessions at once, each onto its chosen worker, in one transaction.

    `assignments` is a sequence of `(session id, worker id, reason)`, most urgent first. This is
    `session_transition(session, SCHEDULED, worker=…)` for a whole scheduler tick, with the same
    guarantees and a constant number of queries:
    - the workers are locked first, all at once and in id order (so two batches queue on their
      first shared worker and never deadlock), and must be RUNNING;
    - their usage is re-read under those locks in one query (`worker_capacities`), and each
      assignment is claimed against it in the order given: one that no longer fits (another
      scheduler got there first) is refused, later ones may still fit. Capacity only grows
      through this lock, so two schedulers racing can never overbook a worker;
    - the sessions are locked with SKIP LOCKED and only in a state the transition table lets
      reach SCHEDULED; one that moved on, or that another transaction is changing right now, is
      refused rather than waited for. Never waiting on a session lock while holding worker locks
      keeps this order (worker → session) deadlock-free against `session_transition`
      (session → worker);
    - the placed sessions get what `session_transition` gives them (worker, `scheduled_at`,
      `status_changed_at`, cleared backoff) in one UPDATE, and one history row each in one
      INSERT; `publish_changes` announces them together after commit.
    Refusals change nothing for that session; `stale_workers` names the workers the caller should
    re-read before deciding those sessions again.
    """
    outcome = ScheduleOutcome()
    wanted = _distinct_assignments(assignments, outcome)
    if not wanted:
        return outcome
    now = now or timezone.now()
    actor_text = actor_name(actor)
    with transaction.atomic():
        workers = _lock_workers(wanted)
        capacities = worker_capacities(list(workers)) if workers else {}
        locked = _lock_schedulable_sessions(wanted)
        placed = _claim(wanted, locked, workers, capacities, outcome)
        if placed:
            _write_placed(placed, locked, now=now, actor_text=actor_text)
    outcome.placed = [(session_id, worker_id) for session_id, worker_id, _ in placed]
    return outcome


def _distinct_assignments(assignments, outcome: ScheduleOutcome) -> dict[str, tuple[str, str]]:
    """`{session id: (worker id, reason)}`; a session assigned twice is refused the second time."""
    wanted: dict[str, tuple[str, str]] = {}
    for session_id, worker_id, reason in assignments:
        session_id, worker_id = str(session_id), str(worker_id)
        if session_id in wanted:
            outcome.refused.append((session_id, worker_id, "assigned twice in one batch"))
            continue
        wanted[session_id] = (worker_id, reason or "")
    return wanted


def _lock_workers(wanted) -> dict[str, tuple[str, str]]:
    """The assigned workers' `{id: (name, status)}`, locked all at once in id order."""
    return {
        str(pk): (name, status)
        for pk, name, status in CMLWorker.objects.select_for_update()
        .filter(pk__in=sorted({w for w, _ in wanted.values()}))
        .order_by("pk")
        .values_list("pk", "name", "status")
    }


def _lock_schedulable_sessions(wanted) -> dict[str, tuple[str, str, str | None]]:
    """`{id: (definition id, status, excluded worker id)}` of the wanted sessions that may be scheduled and are
    not being changed."""
    return {
        str(pk): (definition_id, status, str(excluded) if excluded else None)
        for pk, definition_id, status, excluded in LabletSession.objects.select_for_update(
            skip_locked=True, of=("self",)
        )
        .filter(pk__in=list(wanted), status__in=_SCHEDULABLE_FROM)
        .values_list("pk", "definition_id", "status", "excluded_worker_id")
    }


def _claim(wanted, locked, workers, capacities, outcome: ScheduleOutcome) -> list[tuple[str, str, str]]:
    """Claim each assignment against its worker's capacity in the order given; `(session, worker, reason)` placed."""
    demands = {d.pk: Demand.of(d) for d in LabletDefinition.objects.filter(pk__in={row[0] for row in locked.values()})}
    placed: list[tuple[str, str, str]] = []
    for session_id, (worker_id, reason) in wanted.items():
        if session_id not in locked:
            outcome.refused.append(
                (session_id, worker_id, f"session is no longer {'/'.join(_SCHEDULABLE_FROM)} or is being changed")
            )
            continue
        name, status = workers.get(worker_id, (worker_id, "gone"))
        if locked[session_id][2] == worker_id:
            outcome.refused.append((session_id, worker_id, f"worker {name} is excluded by requeue"))
            continue
        if status != WorkerStatus.RUNNING:
            outcome.refused.append((session_id, worker_id, f"worker {name} is {status}, not RUNNING"))
            outcome.stale_workers.add(worker_id)
            continue
        demand = demands[locked[session_id][0]]
        problem = rejection_reason(capacities[worker_id], demand)
        if problem:
            outcome.refused.append((session_id, worker_id, f"worker {name} cannot take this session: {problem}"))
            outcome.stale_workers.add(worker_id)
            continue
        capacities[worker_id] = capacities[worker_id].claimed(demand)
        placed.append((session_id, worker_id, reason))
    return placed


def _write_placed(placed, locked, *, now: datetime, actor_text: str) -> None:
    """One UPDATE for the placed sessions, one INSERT for their history rows, one announcement after commit."""
    by_worker: dict[str, list[str]] = {}
    for session_id, worker_id, _ in placed:
        by_worker.setdefault(worker_id, []).append(session_id)
    LabletSession.objects.filter(pk__in=[p[0] for p in placed]).update(
        status=S.SCHEDULED,
        worker=Case(
            *(When(pk__in=ids, then=Value(uuid.UUID(w))) for w, ids in by_worker.items()),
            output_field=UUIDField(),
        ),
        scheduled_at=now,
        status_changed_at=now,
        attempts=0,
        last_error="",
        next_attempt_at=None,
        updated_at=now,
    )
    record_changes(
        SessionStatusChange,
        (
            {
                "session_id": session_id,
                "entity": SessionStatusChange.Entity.SESSION,
                "from_status": locked[session_id][1],
                "to_status": S.SCHEDULED,
                "actor": actor_text,
                "reason": reason,
            }
            for session_id, _, reason in placed
        ),
    )
    changes = [("session", pk, locked[pk][1], S.SCHEDULED, reason) for pk, _, reason in placed]
    publish_changes(changes, actor=actor_text)
