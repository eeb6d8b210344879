"""The scheduler loop (SPEC §3.2): place eligible PENDING sessions onto workers, a batch per tick.

Desired state: every PENDING session whose timeslot starts within the placement lead sits
on a worker with room for it. One leader places (etcd lease); capacities of all workers
are read in one query and held in memory (a `Fleet`) while the batch is decided, and the
whole batch is committed by `sessions_schedule_batch`, which locks the chosen workers,
re-checks their capacity under those locks and moves the sessions to SCHEDULED in one
transaction. So two schedulers racing (a lost lease, etcd down) can never overbook: the
loser's assignments are refused, it re-reads those workers and decides those sessions again.
A tick costs a constant number of queries whatever the number of sessions and workers.
"""

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from lcm import loops
from lcm.coordination import LEADER_TTL_SECONDS, coordinator
from scheduling.capacity import Demand
from scheduling.placement import Fleet
from scheduling.selectors import reusable_labs_by_definition, worker_capacities, worker_ends
from sessions.batch import sessions_schedule_batch
from sessions.models import LabletDefinition, LabletSession
from sessions.states import SessionStatus
from workers.models import SystemSettings

logger = logging.getLogger("lcm.scheduling.scheduler")

LOOP = "placement"
ACTOR = "scheduler"
# A refused assignment is decided again against re-read capacities this many times per tick.
COMMIT_ROUNDS = 3


@dataclass
class PlacementReport:
    """What one tick decided."""

    leader: bool = True
    placed: list[tuple[str, str]] = field(default_factory=list)  # (session id, worker name)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (session id, why)
    conflicts: int = 0


@dataclass(frozen=True)
class Due:
    """A PENDING session to place: all that placement reads of it."""

    pk: uuid.UUID
    definition: LabletDefinition
    timeslot_end: datetime | None = None
    excluded_worker: str | None = None  # requeued with "not on this worker again"


def eligible_sessions(now=None, lead_minutes: int | None = None, limit: int = 500, definitions=None) -> list[Due]:
    """PENDING sessions due within the lead time, soonest start first, then oldest (optionally of some
    definitions only: the benchmark places its own sessions).

    Only ids are read per session, and each distinct definition once (a batch holds few):
    building full model instances would cost more than the rest of the tick's reads.
    """
    now = now or timezone.now()
    lead = lead_minutes if lead_minutes is not None else SystemSettings.load().placement_lead_minutes
    rows = LabletSession.objects.filter(
        status=SessionStatus.PENDING,
        timeslot_start__lte=now + timedelta(minutes=lead),
        timeslot_end__gt=now,
    )
    if definitions is not None:
        rows = rows.filter(definition__in=definitions)
    rows = rows.order_by("timeslot_start", "created_at").values_list(
        "pk", "definition_id", "timeslot_end", "excluded_worker_id"
    )[:limit]
    found = list(rows)
    by_id = LabletDefinition.objects.in_bulk({row[1] for row in found}) if found else {}
    return [
        Due(pk, by_id[definition_id], end, str(excluded) if excluded else None)
        for pk, definition_id, end, excluded in found
    ]


def decide(
    sessions, fleet: Fleet, reusable: dict, ends: dict | None = None
) -> tuple[list[tuple], list[tuple[str, str]]]:
    """Choose a worker for each session in order, claiming capacity in `fleet` as it goes (pure, no I/O).

    `reusable` maps definition id → workers holding a reusable lab of it (updated as labs are
    taken). `ends` maps worker id → the latest end of the sessions it holds (updated as sessions are placed):
    given, placement is end-time aware (SPEC §10). Returns `(assignments, waiting)`: `(session, candidate,
    demand)` and `(session id, why)`.
    """
    now = timezone.now()
    assignments, waiting = [], []
    demands: dict = {}
    for session in sessions:
        definition = session.definition
        demand = demands.get(definition.pk)
        if demand is None:
            demand = demands[definition.pk] = Demand.of(definition)
        labs = reusable.get(definition.pk, frozenset())
        excluded_id = getattr(session, "excluded_worker", None)
        excluded = frozenset({excluded_id}) if excluded_id else frozenset()
        chosen = fleet.choose(
            demand,
            cml_version_min=definition.cml_version_min,
            cml_version_max=definition.cml_version_max,
            reusable_on=labs,
            session_end=getattr(session, "timeslot_end", None) if ends is not None else None,
            worker_ends=ends,
            now=now,
            excluded=excluded,
        )
        if chosen is None:
            name = fleet.capacity(excluded_id).name if excluded_id in fleet else excluded_id
            waiting.append(
                (str(session.pk), f"no worker fits ({name}: excluded by requeue)" if excluded else "no worker fits")
            )
            continue
        fleet.claim(chosen.worker_id, demand, reuse=chosen.reusable_lab)
        end = getattr(session, "timeslot_end", None)
        if ends is not None and end is not None:
            ends[chosen.worker_id] = max(ends.get(chosen.worker_id) or end, end)
        if chosen.reusable_lab:
            reusable[definition.pk] = labs - {chosen.worker_id}
        assignments.append((session, chosen, demand))
    return assignments, waiting


def place_pending(*, now=None, limit: int = 500, require_leader: bool = True) -> PlacementReport:
    """One scheduler tick: decide the batch in memory, commit it under row locks.

    While a round places something, the leader goes on with another (sessions booked meanwhile,
    or beyond `limit`), for up to one placement interval: the ticks other processes are asked for
    during that time find the lease taken and return at once, so without this a burst of bookings
    would wait for the next interval.
    """
    if require_leader and not coordinator().try_lead(LOOP):
        # Another holder: mostly a tick in progress; or one cut off by an etcd outage (or dead), whose lease
        # lives on until its TTL (etcd renews it, plus an election timeout, when it restarts). A tick once it
        # must have expired places what waits meanwhile (issue 18); it retries again while the lease is taken.
        loops.kick_later(LOOP, LEADER_TTL_SECONDS + 5)
        return PlacementReport(leader=False)
    deadline = time.monotonic() + settings.LCM_LOOP_PLACEMENT_SECONDS
    report = place_sessions(eligible_sessions(now, limit=limit))
    last = report
    while last.placed and now is None and time.monotonic() < deadline:
        last = place_sessions(eligible_sessions(limit=limit))
        report.placed += last.placed
        report.waiting = last.waiting  # what still waits after the last round
        report.conflicts += last.conflicts
    return report


def place_sessions(sessions, *, worker_ids=None) -> PlacementReport:
    """Place these sessions (most urgent first) onto the workers (all, or `worker_ids`): the body of a tick.

    Reads every worker's capacity in one query, decides the whole batch in memory, commits it
    with `sessions_schedule_batch`, and decides the refused ones again against re-read
    capacities, up to COMMIT_ROUNDS times.
    """
    report = PlacementReport()
    if not sessions:
        return report
    fleet = Fleet(worker_capacities(worker_ids).values())
    reusable = reusable_labs_by_definition({s.definition.pk: s.definition for s in sessions}.values())
    ends = worker_ends(worker_ids)
    todo = sessions
    for round_number in range(COMMIT_ROUNDS):
        assignments, waiting = decide(todo, fleet, reusable, ends)
        report.waiting.extend(waiting)
        if not assignments:
            break
        outcome = sessions_schedule_batch(
            [(s.pk, c.worker_id, f"placed on {c.name} (fill {c.score})") for s, c, _ in assignments], actor=ACTOR
        )
        names = {c.worker_id: c.name for _, c, _ in assignments}
        report.placed.extend((session_id, names[worker_id]) for session_id, worker_id in outcome.placed)
        if not outcome.refused:
            break
        # Someone moved those sessions or filled those workers first: re-read the workers and try again.
        report.conflicts += len(outcome.refused)
        fleet.refresh(worker_capacities({worker_id for _, worker_id, _ in outcome.refused}).values())
        retry = {session_id for session_id, worker_id, _ in outcome.refused if worker_id in outcome.stale_workers}
        last_round = round_number == COMMIT_ROUNDS - 1
        report.waiting.extend(
            (session_id, why) for session_id, _, why in outcome.refused if last_round or session_id not in retry
        )
        todo = [s for s, _, _ in assignments if str(s.pk) in retry]
        if not todo:
            break
    if report.placed or report.waiting:
        logger.info(
            "placement tick: %d placed, %d waiting, %d conflicts",
            len(report.placed),
            len(report.waiting),
            report.conflicts,
        )
    return report
