"""The scheduler loop (SPEC §3.2): place eligible PENDING sessions onto workers, a batch per tick.

Desired state: every PENDING session whose timeslot starts within the placement lead sits
on a worker with room for it. One leader places (etcd lease); capacities of all workers
are read in one query, kept in memory while the batch is decided, and each placement is
committed by `session_transition(→ SCHEDULED)`, which re-checks the worker's capacity under
its row lock. So two schedulers racing (a lost lease, etcd down) can never overbook: the
loser's commit is refused and it re-reads that worker.
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from lcm.coordination import coordinator
from lcm.fsm import InvalidTransition
from scheduling.capacity import Demand, WorkerCapacity
from scheduling.models import SystemSettings
from scheduling.placement import choose_worker
from scheduling.selectors import reusable_lab_workers, worker_capacities
from sessions.models import LabletSession
from sessions.services import session_transition
from sessions.states import SessionStatus

logger = logging.getLogger("lcm.scheduling.scheduler")

LOOP = "placement"
ACTOR = "scheduler"


@dataclass
class PlacementReport:
    """What one tick decided."""

    leader: bool = True
    placed: list[tuple[str, str]] = field(default_factory=list)  # (session id, worker name)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (session id, why)
    conflicts: int = 0


def eligible_sessions(now=None, lead_minutes: int | None = None, limit: int = 500):
    """PENDING sessions due within the lead time, soonest start first, then oldest."""
    now = now or timezone.now()
    lead = lead_minutes if lead_minutes is not None else SystemSettings.load().placement_lead_minutes
    return list(
        LabletSession.objects.select_related("definition")
        .filter(
            status=SessionStatus.PENDING,
            timeslot_start__lte=now + timedelta(minutes=lead),
            timeslot_end__gt=now,
        )
        .order_by("timeslot_start", "created_at")[:limit]
    )


def _claim(capacity: WorkerCapacity, demand: Demand, reuse: bool) -> WorkerCapacity:
    return dataclasses.replace(
        capacity,
        cpu_used=capacity.cpu_used + demand.cpu_cores,
        memory_used=capacity.memory_used + demand.memory_gb,
        storage_used=capacity.storage_used + demand.storage_gb,
        nodes_used=capacity.nodes_used + demand.node_count,
        ports_used=capacity.ports_used + (0 if reuse else demand.ports),
        sessions=capacity.sessions + 1,
    )


def place_pending(*, now=None, limit: int = 500, require_leader: bool = True) -> PlacementReport:
    """One scheduler tick: decide the batch in memory, commit each placement under row locks."""
    report = PlacementReport()
    if require_leader and not coordinator().try_lead(LOOP):
        report.leader = False
        return report
    sessions = eligible_sessions(now, limit=limit)
    if not sessions:
        return report
    capacities = worker_capacities()
    reusable_cache: dict = {}
    for session in sessions:
        definition = session.definition
        demand = Demand.of(definition)
        if definition.pk not in reusable_cache:
            reusable_cache[definition.pk] = reusable_lab_workers(definition)
        reusable = reusable_cache[definition.pk]
        chosen = choose_worker(
            list(capacities.values()),
            demand,
            cml_version_min=definition.cml_version_min,
            cml_version_max=definition.cml_version_max,
            reusable_on=reusable,
        )
        if chosen is None:
            report.waiting.append((str(session.pk), "no worker fits"))
            continue
        try:
            session_transition(
                session,
                SessionStatus.SCHEDULED,
                actor=ACTOR,
                reason=f"placed on {chosen.name} (fill {chosen.score})",
                expected_status=SessionStatus.PENDING,
                worker=chosen.worker_id,
            )
        except InvalidTransition as exc:
            # Someone moved the session or filled the worker first: re-read that worker and go on.
            report.conflicts += 1
            capacities.update(worker_capacities([chosen.worker_id]))
            report.waiting.append((str(session.pk), exc.detail))
            continue
        capacities[chosen.worker_id] = _claim(capacities[chosen.worker_id], demand, chosen.reusable_lab)
        reusable_cache[definition.pk] = reusable - {chosen.worker_id}
        report.placed.append((str(session.pk), chosen.name))
    if report.placed or report.waiting:
        logger.info(
            "placement tick: %d placed, %d waiting, %d conflicts",
            len(report.placed),
            len(report.waiting),
            report.conflicts,
        )
    return report
