"""The autoscaler loop: the database in, `workers.autoscaler.plan_ahead`'s decisions carried out (SPEC §3.6, §10).

`autoscale_tick()` is the "autoscaler" loop (a singleton behind a leader lease). It reads the eligible
PENDING sessions (due within the placement lead plus the fastest template's boot), every worker's capacity as
it will be after that boot (`after_leaving`), the last hour's bookings (`walk_in_reserve`) and the enabled
templates in a few queries, asks the pure `workers.autoscaler.plan_ahead` what to do (the same planner
`bench_autoscale` replays), and carries each decision out through the services
(`worker_create`, `worker_set_desired`, `worker_cancel_drain`, `worker_drain_if_idle`,
`worker_pause_if_idle`), recording it with its reason in `ScaleDecision`. The worker reconciler then
does the EC2 and CML work. A crash between two decisions loses nothing: the next tick plans again from
the database, and a launched worker counts as coming capacity from the moment its row exists, so a
demand never starts two workers.
"""

import dataclasses
import logging
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Max, OuterRef, Subquery
from django.utils import timezone

from lcm.coordination import coordinator
from lcm.fsm import InvalidTransition
from lcm.versions import ami_version_hint
from scheduling.capacity import Demand, WorkerCapacity
from scheduling.selectors import worker_capacities
from sessions.models import LabletSession
from sessions.states import SessionStatus, capacity_holding_q
from workers.autoscaler import (
    WALK_IN_WINDOW,
    Decision,
    PendingSession,
    Policy,
    TemplateOption,
    WorkerState,
    after_leaving,
    keep_horizon,
    plan_ahead,
    walk_in_reserve,
)
from workers.models import CMLWorker, ScaleAction, ScaleDecision, SystemSettings, WorkerStatusChange, WorkerTemplate
from workers.selectors import (
    AUTOSCALER_ACTOR,
    IDLE_ACTOR,
    LCM_STOPPERS,
    RECONCILER_ACTOR,  # noqa: F401 - where the reconcilers import it from
    stopped_by,
)
from workers.services import (
    scale_decision_record,
    worker_cancel_drain,
    worker_create,
    worker_drain_if_idle,
    worker_pause_if_idle,
    worker_set_desired,
)
from workers.states import DesiredStatus, WorkerStatus

logger = logging.getLogger("lcm.workers.autoscaling")

W = WorkerStatus
A = ScaleAction
# A demand that keeps waiting for the same reason is recorded once per this long, not on every tick.
WAIT_REPEAT_AFTER = timedelta(minutes=10)


# --- reading the fleet ---------------------------------------------------------------------


def template_option(template: WorkerTemplate) -> TemplateOption:
    return TemplateOption(
        id=str(template.pk),
        name=template.name,
        region=template.region,
        license_type=template.license_type,
        cpu_cores=template.cpu_cores,
        memory_gb=template.memory_gb,
        storage_gb=template.storage_gb,
        max_nodes=template.max_nodes,
        ports=template.port_range_end - template.port_range_start + 1,
        startup_minutes=template.startup_minutes,
        cost_per_hour=float(template.cost_per_hour),
        cml_version=ami_version_hint(template.ami_name_pattern),
    )


def fleet_states(now=None, *, until=None) -> list[WorkerState]:
    """Every worker that is not TERMINATED, with its capacity and what scaling needs, in three queries (four with
    `until`: then each worker as `after_leaving` sees it, the sessions whose timeslot ends by `until` gone)."""
    now = now or timezone.now()
    running_since = (
        WorkerStatusChange.objects.filter(worker=OuterRef("pk"), field="status", to_status=W.RUNNING)
        .order_by("-at")
        .values("at")[:1]
    )
    last_session = LabletSession.objects.filter(worker=OuterRef("pk")).order_by("-updated_at").values("updated_at")[:1]
    rows = list(
        CMLWorker.objects.exclude(status=W.TERMINATED)
        .annotate(running_since=Subquery(running_since), last_session_at=Subquery(last_session))
        .values(
            "id",
            "status",
            "region",
            "desired_status",
            "last_activity_at",
            "idle_detection_enabled",
            "created_at",
            "template__cost_per_hour",
            "template__ami_name_pattern",
            "running_since",
            "last_session_at",
        )
    )
    capacities = worker_capacities([r["id"] for r in rows])
    stoppable = [r["id"] for r in rows if r["status"] in (W.DRAINING, W.STOPPING, W.STOPPED)]
    stoppers = stopped_by(stoppable) if stoppable else {}
    states = [_worker_state(r, capacities[str(r["id"])], stoppers) for r in rows]
    if until is None:
        return states
    leaving = _leaving([r["id"] for r in rows], until)
    return [after_leaving(state, leaving.get(state.id, ()), until) for state in states]


def _leaving(worker_ids: list, until) -> dict[str, list[tuple[Demand, datetime]]]:
    """Per worker, (demand, timeslot end) of the sessions holding capacity on it whose timeslot ends by `until`."""
    rows = LabletSession.objects.filter(
        capacity_holding_q(), worker_id__in=worker_ids, timeslot_end__lte=until
    ).select_related("definition")
    leaving: dict[str, list[tuple[Demand, datetime]]] = {}
    for session in rows:
        leaving.setdefault(str(session.worker_id), []).append((Demand.of(session.definition), session.timeslot_end))
    return leaving


def _worker_state(row: dict, capacity: WorkerCapacity, stoppers: dict[str, str]) -> WorkerState:
    times = [t for t in (row["running_since"], row["last_session_at"]) if t is not None]
    lcm_stopped = (
        row["desired_status"] != DesiredStatus.TERMINATED
        and row["status"] in (W.DRAINING, W.STOPPING, W.STOPPED)
        and stoppers.get(str(row["id"])) in LCM_STOPPERS
    )
    if not capacity.cml_version and row["status"] not in (W.RUNNING, W.DRAINING):
        # On its way and not yet heard from: it will run what its template's AMI promises, and the autoscaler
        # counts it as coming capacity for that version (placement judges the version it then reports).
        capacity = dataclasses.replace(capacity, cml_version=ami_version_hint(row["template__ami_name_pattern"]))
    return WorkerState(
        capacity=capacity,
        region=row["region"],
        desired_status=row["desired_status"],
        lcm_stopped=lcm_stopped,
        empty_since=max(times) if times else row["created_at"],
        up_since=row["running_since"] or row["created_at"],
        last_activity_at=row["last_activity_at"],
        idle_detection_enabled=row["idle_detection_enabled"],
        cost_per_hour=float(row["template__cost_per_hour"] or 0),
    )


def pending_sessions(now=None, limit: int = 1000, *, ahead: timedelta = timedelta(0)) -> list[PendingSession]:
    """The PENDING sessions due within the placement lead plus `ahead` (SPEC §10: planning from the forecast, a
    worker launched now for a session is RUNNING by its placement lead; `keep_horizon`), soonest first."""
    now = now or timezone.now()
    placement = timedelta(minutes=SystemSettings.load().placement_lead_minutes)
    lead = placement + ahead
    rows = (
        LabletSession.objects.select_related("definition")
        .filter(status=SessionStatus.PENDING, timeslot_start__lte=now + lead, timeslot_end__gt=now)
        .order_by("timeslot_start", "created_at")[:limit]
    )
    demands: dict = {}
    pending = []
    for session in rows:
        definition = session.definition
        if definition.pk not in demands:
            demands[definition.pk] = Demand.of(definition)
        pending.append(
            PendingSession(
                id=str(session.pk),
                demand=demands[definition.pk],
                start=session.timeslot_start,
                cml_version_min=definition.cml_version_min,
                cml_version_max=definition.cml_version_max,
                due=max(session.created_at, session.timeslot_start - placement),
            )
        )
    return pending


def recent_bookings(now=None, window: timedelta = WALK_IN_WINDOW) -> list[tuple[datetime, datetime, Demand]]:
    """(booked at, start, demand) of the sessions booked within `window` before `now`: what `walk_in_reserve` sizes
    the room kept for walk-ins from (bookings known now, nothing about the walk-ins to come)."""
    now = now or timezone.now()
    rows = LabletSession.objects.filter(created_at__gt=now - window, created_at__lte=now).select_related("definition")
    return [(s.created_at, s.timeslot_start, Demand.of(s.definition)) for s in rows]


def last_scale_up() -> dict[str, datetime]:
    """The time of the latest LAUNCH or START per region (the cooldowns count from it)."""
    rows = (
        ScaleDecision.objects.filter(action__in=[A.LAUNCH, A.START])
        .values("region")
        .annotate(latest=Max("at"))
        .values_list("region", "latest")
    )
    return dict(rows)


# --- the autoscaler loop -------------------------------------------------------------------


def autoscale_tick(*, now=None, require_leader: bool = True) -> list[Decision]:
    """One autoscaler tick: plan from the database, carry the decisions out, record them. Returns what was done."""
    if require_leader and not coordinator().try_lead("autoscaler"):
        return []
    now = now or timezone.now()
    templates = {str(t.pk): t for t in WorkerTemplate.objects.filter(enabled=True)}
    # Planning from the forecast: the sessions due by the fastest template's boot time (plus a stop: a worker that
    # empties shortly before a booking needs it waits rather than stopping and booting) after the placement lead.
    # A worker launched now is RUNNING after that boot: the sessions that leave by then free room as well, and the
    # room kept for walk-ins is sized from the last hour's bookings.
    boot = min((t.startup_minutes for t in templates.values()), default=0)
    decisions = plan_ahead(
        now,
        pending_sessions(now, ahead=keep_horizon(boot)),
        fleet_states(now, until=now + timedelta(minutes=boot)),
        [template_option(t) for t in templates.values()],
        Policy.from_settings(SystemSettings.load()),
        last_scale_up=last_scale_up(),
        reserve=walk_in_reserve(now, recent_bookings(now), timedelta(minutes=boot)),
    )
    done = []
    for decision in decisions:
        try:
            if _apply(decision, templates):
                done.append(decision)
        except InvalidTransition as exc:
            # The worker moved on since it was read (an admin, the reconciler): the next tick plans again.
            logger.info("autoscaler skipped %s of %s: %s", decision.action, decision.worker_name, exc.detail)
    return done


def _apply(decision: Decision, templates: dict) -> bool:
    """Carry one decision out and record it; False when it no longer applies (or is a repeated WAIT)."""
    common = {"reason": decision.reason, "region": decision.region, "sessions": decision.sessions}
    if decision.action == A.WAIT:
        return _wait(decision, common)
    if decision.action == A.LAUNCH:
        return _launch(templates[decision.template_id], decision, common)
    handler = _WORKER_HANDLERS.get(decision.action)
    if handler is None:
        raise ValueError(f"unknown decision {decision.action}")
    worker = CMLWorker.objects.filter(pk=decision.worker_id).first()
    if worker is None:
        return False
    return handler(worker, decision, common)


def _wait(decision: Decision, common: dict) -> bool:
    recent = ScaleDecision.objects.filter(
        action=A.WAIT, reason=decision.reason, at__gte=timezone.now() - WAIT_REPEAT_AFTER
    )
    if any(row.sessions == list(decision.sessions) for row in recent.only("sessions")):
        return False  # the same wait for the same sessions is on record already
    scale_decision_record(A.WAIT, **common)
    return True


def _launch(template: WorkerTemplate, decision: Decision, common: dict) -> bool:
    with transaction.atomic():
        worker = worker_create(
            name=f"{template.name}-{uuid.uuid4().hex[:8]}",
            actor=AUTOSCALER_ACTOR,
            template=template,
            reason=decision.reason,
        )
        scale_decision_record(A.LAUNCH, template=template, worker=worker, **common)
    return True


def _start(worker: CMLWorker, decision: Decision, common: dict) -> bool:
    if worker.status not in (W.STOPPING, W.STOPPED) or worker.desired_status != DesiredStatus.STOPPED:
        return False
    with transaction.atomic():
        worker_set_desired(worker, DesiredStatus.RUNNING, actor=AUTOSCALER_ACTOR, reason=decision.reason)
        scale_decision_record(A.START, worker=worker, **common)
    return True


def _cancel_drain(worker: CMLWorker, decision: Decision, common: dict) -> bool:
    with transaction.atomic():
        worker_cancel_drain(worker, actor=AUTOSCALER_ACTOR, reason=decision.reason)
        scale_decision_record(A.CANCEL_DRAIN, worker=worker, **common)
    return True


def _drain_or_pause(worker: CMLWorker, decision: Decision, common: dict) -> bool:
    if decision.action == A.DRAIN:
        service, actor = worker_drain_if_idle, AUTOSCALER_ACTOR
    else:
        service, actor = worker_pause_if_idle, IDLE_ACTOR
    with transaction.atomic():
        if service(worker, actor=actor, reason=decision.reason) is None:
            return False
        scale_decision_record(decision.action, worker=worker, actor=actor, **common)
    return True


_WORKER_HANDLERS = {A.START: _start, A.CANCEL_DRAIN: _cancel_drain, A.DRAIN: _drain_or_pause, A.PAUSE: _drain_or_pause}
