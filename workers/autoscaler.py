"""Autoscaling decisions as pure functions over plain data (SPEC §3.2 scale-up trigger, §3.6).

`plan(now, pending, workers, templates, policy, ...)` looks at the eligible PENDING sessions and
the fleet and returns the decisions of one autoscaler tick, each with its reason. It does no I/O:
`workers.autoscaling` feeds it from the database and carries the decisions out, and `manage.py
bench_autoscale` replays a booking trace through it on a simulated clock.

Scale up. The pending sessions are first placed, in memory and in start order, on the RUNNING
workers and then on the workers on their way (PENDING, PROVISIONING, STARTING, or stopped with
RUNNING desired: coming capacity), so a demand that a booting worker will serve starts nothing
(one demand, one worker). What is left is served, cheapest first, by
1. a worker LCM itself is draining (the drain is cancelled),
2. a worker LCM itself stopped or is stopping (drained or idle-paused), started again,
3. new workers (autoscaling enabled only): the largest unmet demand picks the template. Among the
   enabled templates that fit it (capacity, licence, the CML version its AMI promises) and whose
   region is below its maximum and past its scale-up cooldown, the one with the lowest cost per
   session wins, counted over every unmet session the template could take with workers of it
   alone (SPEC §10: the template mix with the least cost that fits; a cohort goes to whichever
   template packs it cheapest, its last few sessions to a smaller one; equal costs go to the
   faster boot), so eight small sessions get one shared worker rather than eight personal ones,
   and a single session gets the cheapest template that fits it; the other unmet sessions that
   fit on that worker ride along. Repeat until every unmet session is served or waits, with the
   reason it waits. The caller decides how far ahead the pending sessions reach: the tick passes
   those due within the placement lead plus a boot time (planning from the forecast).

Scale down (autoscaling enabled, nothing scaled up in this tick, and no LAUNCH or START in the
worker's region, nor the worker's own start, within the scale-down cooldown, so capacity just
added is never removed): a
RUNNING worker that holds no session and is not needed by the pending sessions of the lead window
(the in-memory placement above put none on it) drains, longest empty first, as long as its region
keeps `min_workers`. Bookings are mostly made ahead, so the lead-window check, not a wait, is what
keeps a worker that is about to be used. Idle auto-pause (idle detection enabled, on the worker
too): the same kind of worker with no session and no CML activity for the idle timeout is paused
(stopped), whether autoscaling is on or not; LCM starts it again when demand returns.

Planning from the forecast (`plan_ahead`, what the production tick and `bench_autoscale` call): `plan` over the
sessions due within a boot plus a stop past the placement lead (`keep_horizon`: an empty worker needed that soon
waits rather than stopping and booting again), on the workers as `after_leaving` sees them once a boot has
passed, with the `walk_in_reserve` planned like pending sessions; a LAUNCH only a boot before its earliest
session's placement moment, never for the reserve alone.
"""

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduling.capacity import Demand, WorkerCapacity
from scheduling.capacity import fit_reason as capacity_fit_reason
from scheduling.placement import fill
from workers.states import COMING, DesiredStatus, ScaleAction, WorkerStatus

W = WorkerStatus
A = ScaleAction


@dataclass(frozen=True)
class TemplateOption:
    """An enabled worker template as the autoscaler sees it."""

    id: str
    name: str
    region: str
    license_type: str
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    max_nodes: int
    ports: int
    startup_minutes: int
    cost_per_hour: float
    cml_version: str = ""  # what its AMI pattern promises ("2.9"); "" = unknown (satisfies no version bound)

    def capacity(self, worker_id: str = "", name: str = "") -> WorkerCapacity:
        """An empty worker of this template."""
        return WorkerCapacity(
            worker_id=worker_id or f"new:{self.name}",
            name=name or f"new {self.name}",
            status=W.RUNNING,
            license_type=self.license_type,
            cml_version=self.cml_version,
            cpu_total=self.cpu_cores,
            memory_total=self.memory_gb,
            storage_total=self.storage_gb,
            nodes_total=self.max_nodes,
            ports_total=self.ports,
        )


@dataclass(frozen=True)
class PendingSession:
    """An eligible PENDING session: what it needs and when it starts."""

    id: str
    demand: Demand
    start: datetime
    cml_version_min: str = ""
    cml_version_max: str = ""
    due: datetime | None = None  # when it is placed (start − placement lead, or its booking); None: now
    reserve: bool = False  # room kept for walk-ins to come (`walk_in_reserve`), not a booked session


@dataclass(frozen=True)
class WorkerState:
    """One worker of the fleet: its capacity (and status) plus what scaling decisions need."""

    capacity: WorkerCapacity
    region: str
    desired_status: str = DesiredStatus.RUNNING
    # Drained, paused or stopped by LCM itself (autoscaler, idle detection): LCM may start it again.
    lcm_stopped: bool = False
    empty_since: datetime | None = None  # when it last held a session (or came up), None: unknown
    last_activity_at: datetime | None = None  # last CML activity (running nodes) or session
    idle_detection_enabled: bool = True
    cost_per_hour: float = 0.0
    up_since: datetime | None = None  # when it last became RUNNING (None: unknown)

    @property
    def id(self) -> str:
        return self.capacity.worker_id

    @property
    def name(self) -> str:
        return self.capacity.name

    @property
    def status(self) -> str:
        return self.capacity.status


@dataclass(frozen=True)
class Policy:
    """The SystemSettings that steer scaling, as plain values."""

    autoscaling_enabled: bool = True
    min_workers: int = 0
    max_workers: int = 10
    scale_up_cooldown: timedelta = timedelta(minutes=5)
    scale_down_cooldown: timedelta = timedelta(minutes=15)
    idle_detection_enabled: bool = True
    idle_timeout: timedelta = timedelta(minutes=30)

    @classmethod
    def from_settings(cls, system_settings) -> "Policy":
        s = system_settings
        return cls(
            autoscaling_enabled=s.autoscaling_enabled,
            min_workers=s.min_workers_per_region,
            max_workers=s.max_workers_per_region,
            scale_up_cooldown=timedelta(minutes=s.scale_up_cooldown_minutes),
            scale_down_cooldown=timedelta(minutes=s.scale_down_cooldown_minutes),
            idle_detection_enabled=s.idle_detection_enabled,
            idle_timeout=timedelta(minutes=s.idle_timeout_minutes),
        )


@dataclass(frozen=True)
class Decision:
    """One decision and why. `template_id` for LAUNCH; `worker_id` for START, CANCEL_DRAIN, DRAIN, PAUSE."""

    action: str
    reason: str
    region: str = ""
    template_id: str | None = None
    template_name: str = ""
    worker_id: str | None = None
    worker_name: str = ""
    sessions: tuple[str, ...] = ()

    @property
    def scales_up(self) -> bool:
        return self.action in (A.LAUNCH, A.START, A.CANCEL_DRAIN)


@dataclass
class _Slot:
    """A worker's capacity as this plan fills it in memory."""

    capacity: WorkerCapacity
    state: WorkerState | None = None
    sessions: list[str] = field(default_factory=list)


def fit_reason(capacity: WorkerCapacity, session: PendingSession) -> str | None:
    """Why `session` does not fit `capacity` (None: it fits): placement's own rule, `scheduling.capacity.fit_reason`,
    so a template or coming worker the autoscaler counts on is one placement accepts. Status is the caller's."""
    return capacity_fit_reason(
        capacity,
        session.demand,
        cml_version_min=session.cml_version_min,
        cml_version_max=session.cml_version_max,
    )


def _best_fit(slots: Iterable[_Slot], session: PendingSession) -> _Slot | None:
    """The fullest slot that still fits (then the larger, then the lowest id), as placement ranks workers."""
    fitting = [slot for slot in slots if fit_reason(slot.capacity, session) is None]
    if not fitting:
        return None
    return min(fitting, key=lambda s: (-fill(s.capacity), -s.capacity.cpu_total, s.capacity.worker_id))


def _claim(slot: _Slot, session: PendingSession) -> None:
    slot.capacity = _claimed(slot.capacity, session.demand)
    slot.sessions.append(session.id)


def _claimed(capacity: WorkerCapacity, demand: Demand) -> WorkerCapacity:
    return dataclasses.replace(
        capacity,
        cpu_used=capacity.cpu_used + demand.cpu_cores,
        memory_used=capacity.memory_used + demand.memory_gb,
        storage_used=capacity.storage_used + demand.storage_gb,
        nodes_used=capacity.nodes_used + demand.node_count,
        ports_used=capacity.ports_used + demand.ports,
        sessions=capacity.sessions + 1,
    )


def _size(session: PendingSession) -> tuple:
    d = session.demand
    return (d.cpu_cores, d.memory_gb, d.storage_gb, d.node_count, d.ports)


def _coming(state: WorkerState) -> bool:
    """On its way to RUNNING: booting, or stopped (stopping) with RUNNING desired (someone started it again)."""
    restarting = state.status in (W.STOPPING, W.STOPPED) and state.desired_status == DesiredStatus.RUNNING
    return state.status in COMING or restarting


def _as_running(state: WorkerState) -> WorkerCapacity:
    return dataclasses.replace(state.capacity, status=W.RUNNING)


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.0f} min"


def plan(
    now: datetime,
    pending: Iterable[PendingSession],
    workers: Iterable[WorkerState],
    templates: Iterable[TemplateOption],
    policy: Policy,
    *,
    last_scale_up: Mapping[str, datetime] | None = None,
) -> list[Decision]:
    """The decisions of one autoscaler tick (see the module docstring); WAIT decisions say why demand waits.

    `last_scale_up` is the time of the latest LAUNCH/START per region (cooldowns).
    """
    last_scale_up = dict(last_scale_up or {})
    workers = list(workers)
    pending = sorted(pending, key=lambda s: (s.reserve, s.start, s.id))  # the walk-in reserve last
    active = _active_per_region(workers)
    # 1. Place the pending sessions in memory on RUNNING workers, then on coming ones.
    unmet, needed = _place(pending, workers)
    # 2. Revive what LCM itself drained or stopped: cheaper and no new instance.
    decisions, still_unmet = _revive(unmet, workers, policy, active)
    # 3. Launch new workers for the rest.
    if still_unmet:
        decisions.extend(_launches(now, still_unmet, list(templates), policy, active, last_scale_up))
    # 4. Scale down and idle pause: only while demand is not growing.
    if any(d.scales_up for d in decisions):
        return decisions
    decisions.extend(_scale_down(now, workers, needed, policy, active, last_scale_up))
    return decisions


def _active_per_region(workers: list[WorkerState]) -> dict[str, int]:
    """Active workers per region: what `max_workers` caps and `min_workers` keeps."""
    active: dict[str, int] = {}
    for state in workers:
        serving = state.status in (W.RUNNING, W.DRAINING) or _coming(state)
        if serving and state.desired_status == DesiredStatus.RUNNING:
            active[state.region] = active.get(state.region, 0) + 1
    return active


def _place(pending: list[PendingSession], workers: list[WorkerState]) -> tuple[list[PendingSession], set[str]]:
    """Place the sessions in memory on RUNNING workers, then on coming ones: (the unmet sessions, the ids of
    the RUNNING workers that some pending session needs)."""
    running = [
        _Slot(state.capacity, state)
        for state in workers
        if state.status == W.RUNNING and state.desired_status == DesiredStatus.RUNNING
    ]
    coming = [
        _Slot(_as_running(state), state)
        for state in workers
        if _coming(state) and state.desired_status == DesiredStatus.RUNNING
    ]
    unmet: list[PendingSession] = []
    for session in pending:
        slot = _best_fit(running, session) or _best_fit(coming, session)
        if slot is None:
            unmet.append(session)
        else:
            _claim(slot, session)
    return unmet, {slot.capacity.worker_id for slot in running if slot.sessions}


def _revive(unmet, workers, policy, active) -> tuple[list[Decision], list[PendingSession]]:
    """START or CANCEL_DRAIN decisions for the workers LCM itself drained or stopped that serve unmet sessions,
    and the sessions still unmet."""
    revivable = [
        _Slot(_as_running(state), state)
        for state in workers
        if state.lcm_stopped and state.status in (W.DRAINING, W.STOPPING, W.STOPPED)
    ]
    revived: list[_Slot] = []
    still_unmet = []
    for session in unmet:
        slot = _best_fit(revived, session)
        if slot is None:
            candidates = [
                s
                for s in revivable
                if s not in revived
                and (s.state.status == W.DRAINING or active.get(s.state.region, 0) < policy.max_workers)
            ]
            slot = _best_fit(candidates, session)
            if slot is not None:
                revived.append(slot)
                if slot.state.status != W.DRAINING:
                    active[slot.state.region] = active.get(slot.state.region, 0) + 1
        if slot is None:
            still_unmet.append(session)
        else:
            _claim(slot, session)
    return [_revival(slot) for slot in revived], still_unmet


def _revival(slot: _Slot) -> Decision:
    state = slot.state
    if state.status == W.DRAINING:
        action, verb = A.CANCEL_DRAIN, "keep draining worker"
    else:
        action, verb = A.START, f"start {state.status.lower()} worker"
    return Decision(
        action,
        f"{verb} {state.name} for {len(slot.sessions)} pending session(s) that fit no running or coming worker",
        region=state.region,
        worker_id=state.id,
        worker_name=state.name,
        sessions=tuple(slot.sessions),
    )


def _launches(now, unmet, templates, policy, active, last_scale_up) -> list[Decision]:
    """New workers for the unmet sessions (largest demand first), or WAIT decisions saying why not."""
    if not policy.autoscaling_enabled:
        return [
            Decision(
                A.WAIT,
                f"{len(unmet)} pending session(s) fit no running or coming worker, and autoscaling is disabled",
                sessions=tuple(s.id for s in unmet),
            )
        ]
    decisions: list[Decision] = []
    waits: dict[str, list[str]] = {}
    remaining = sorted(unmet, key=lambda s: tuple(-x for x in _size(s)))
    launched: dict[str, int] = {}
    while remaining:
        largest = remaining[0]
        options, refusals = _launch_options(now, largest, remaining, templates, policy, active, last_scale_up)
        if not options:
            reason = "no launch possible: " + ("; ".join(refusals) if refusals else "no enabled template")
            waits.setdefault(reason, []).append(largest.id)
            remaining.pop(0)
            continue
        per_session, _, cost, _, template, slot = min(options, key=lambda o: o[:4])
        active[template.region] = active.get(template.region, 0) + 1
        launched[template.region] = launched.get(template.region, 0) + 1
        covered = set(slot.sessions)
        remaining = [s for s in remaining if s.id not in covered]
        decisions.append(
            Decision(
                A.LAUNCH,
                f"{len(slot.sessions)} pending session(s) fit no running or coming worker; {template.name} fits the "
                f"largest ({_describe(largest.demand)}) at the lowest cost per session "
                f"(${per_session:.3f}/h, ${cost:.3f}/h for the worker)",
                region=template.region,
                template_id=template.id,
                template_name=template.name,
                sessions=tuple(slot.sessions),
            )
        )
    decisions.extend(Decision(A.WAIT, reason, sessions=tuple(ids)) for reason, ids in waits.items())
    return decisions


def _launch_options(now, largest, remaining, templates, policy, active, last_scale_up) -> tuple[list, list[str]]:
    """The templates that could serve `largest` now, each as (cost per session, cost, name, template, the slot
    with the remaining sessions that ride along), and why the others cannot."""
    options = []
    refusals = []
    for template in templates:
        problem = fit_reason(template.capacity(), largest)
        region = template.region
        last = last_scale_up.get(region)
        if problem:
            refusals.append(f"{template.name}: {problem}")
        elif active.get(region, 0) >= policy.max_workers:
            refusals.append(f"{template.name}: region {region} is at its maximum of {policy.max_workers} workers")
        elif last is not None and now - last < policy.scale_up_cooldown:
            until = last + policy.scale_up_cooldown
            refusals.append(f"{template.name}: scale-up cooldown in {region} until {until:%H:%M:%S}")
        else:
            slot = _Slot(template.capacity())
            for session in remaining:
                if fit_reason(slot.capacity, session) is None:
                    _claim(slot, session)
            cost = float(template.cost_per_hour)
            per_session = _fleet_cost_per_session(template, remaining, limit=policy.max_workers - active.get(region, 0))
            options.append((per_session, template.startup_minutes, cost, template.name, template, slot))
    return options, refusals


def _fleet_cost_per_session(template: TemplateOption, remaining: list[PendingSession], *, limit: int) -> float:
    """The cost per session of serving every remaining session this template can take with workers of it alone
    (best fit, at most `limit` workers): the template mix with the least cost is built one launch at a time from
    this, so a cohort goes to whichever template packs it cheapest and its last few sessions to a smaller one."""
    slots: list[_Slot] = []
    served = 0
    for session in remaining:
        if fit_reason(template.capacity(), session) is not None:
            continue
        slot = _best_fit(slots, session)
        if slot is None:
            if len(slots) >= max(1, limit):
                continue
            slot = _Slot(template.capacity(f"new:{len(slots)}"))
            slots.append(slot)
        _claim(slot, session)
        served += 1
    return round(len(slots) * float(template.cost_per_hour) / served, 9)  # equal costs tie, not float noise


def _describe(demand: Demand) -> str:
    return (
        f"{demand.cpu_cores} CPU, {demand.memory_gb} GB, {demand.storage_gb} GB disk, {demand.node_count} nodes, "
        f"{demand.ports} ports"
    )


# --- planning from the forecast (SPEC §10): what the production tick and `bench_autoscale` both run -----------

WALK_IN_WINDOW = timedelta(minutes=60)  # the walk-in history the reserve is sized from
# What stopping a worker bills (EC2 bills an instance until it is stopped; a CML worker stops in a minute or two).
# An empty worker a booking needs within a boot plus this is kept RUNNING: stopping it and launching (or starting)
# one again would bill the stop and the boot, more than the wait (`keep_horizon`).
STOP_MINUTES = 2
WALK_IN_INSTANTIATE = timedelta(minutes=2)  # a lab's instantiation: a walk-in booked closer than a boot plus this
# to its start waits for a launched worker


def keep_horizon(boot_minutes: float, stop_minutes: float = STOP_MINUTES) -> timedelta:
    """How far past the placement lead `plan_ahead` looks at booked sessions: a boot, the time a worker launched now
    needs to be RUNNING by a session's placement moment, plus a stop, so that a worker that empties shortly before
    a booking needs it again stays RUNNING and waits (the ski-rental break-even: waiting less than a stop plus a
    boot costs less than stopping and booting again); launches are still made only a boot ahead."""
    return timedelta(minutes=boot_minutes + stop_minutes)


def after_leaving(state: WorkerState, leaving: Iterable[tuple[Demand, datetime]], until: datetime) -> WorkerState:
    """The worker as the plan sees it at `until`: its capacity once the sessions that leave by then have left.
    `leaving` is (demand, release time) of the sessions it holds; a worker launched now is RUNNING at `until`, so
    capacity freed before then serves a pending session as well as a new worker would."""
    capacity = state.capacity
    for demand, release in leaving:
        if release <= until:
            capacity = capacity.claimed(demand, count=-1)
    return state if capacity is state.capacity else dataclasses.replace(state, capacity=capacity)


def walk_in_reserve(
    now: datetime,
    recent: Iterable[tuple[datetime, datetime, Demand]],
    horizon: timedelta,
    *,
    window: timedelta = WALK_IN_WINDOW,
    instantiate: timedelta = WALK_IN_INSTANTIATE,
) -> list[PendingSession]:
    """Room to keep for the walk-ins to come that a launch would serve late: of the bookings `recent` (booked at,
    start, demand), those booked within `window` before `now` and closer to their start than `horizon` (a boot)
    plus `instantiate`; as many as arrived in the window per that time (rounded up), at the median one's size (by
    CPU, memory, nodes). The median, not the largest: room for the largest walk-in is a whole small worker kept
    empty, and `bench_autoscale` measured it buying no walk-in the median does not (exam day, cml-large: 1.196 →
    1.162 × the ideal curve, walk-ins the same). `plan_ahead` keeps running (or stopped) workers for them; it launches
    none."""
    soon = horizon + instantiate
    walk_ins = [demand for booked, start, demand in recent if now - window < booked <= now and start - booked < soon]
    if not walk_ins:
        return []
    count = math.ceil(len(walk_ins) * (soon / window))
    ordered = sorted(walk_ins, key=lambda d: (d.cpu_cores, d.memory_gb, d.node_count))
    typical = ordered[len(ordered) // 2]
    return [PendingSession(f"walk-in:{i}", typical, now, due=now, reserve=True) for i in range(count)]


def plan_ahead(
    now: datetime,
    pending: Iterable[PendingSession],
    workers: Iterable[WorkerState],
    templates: Iterable[TemplateOption],
    policy: Policy,
    *,
    last_scale_up: Mapping[str, datetime] | None = None,
    reserve: Iterable[PendingSession] = (),
) -> list[Decision]:
    """`plan` from the forecast: the pending sessions reach a boot time past the placement lead (their `due`), the
    workers are seen as `after_leaving` leaves them, and the walk-in `reserve` is planned like pending sessions.
    Then a LAUNCH is made only when it must be, at its earliest due session's placement moment less the template's
    boot (launched later, it would be late; earlier, it idles), and never for the reserve alone (the reserve keeps
    workers and starts stopped ones, it launches none); reserve sessions are left out of what the decisions list."""
    pending = list(pending)
    templates = list(templates)
    due = {s.id: s.due or now for s in pending if not s.reserve}
    boot = {t.id: timedelta(minutes=t.startup_minutes) for t in templates}
    decisions = plan(now, [*pending, *reserve], workers, templates, policy, last_scale_up=last_scale_up)
    kept = []
    for decision in decisions:
        booked = tuple(s for s in decision.sessions if s in due)
        if decision.action == A.LAUNCH and (
            not booked or min(due[s] for s in booked) > now + boot[decision.template_id]
        ):
            continue
        if decision.action == A.WAIT and not booked:
            continue
        kept.append(
            decision if len(booked) == len(decision.sessions) else dataclasses.replace(decision, sessions=booked)
        )
    return kept


def _scale_down(now, workers, needed, policy, active, last_scale_up) -> list[Decision]:
    """DRAIN decisions for empty, unneeded workers outside the scale-down cooldown; PAUSE decisions for idle ones."""
    decisions: list[Decision] = []
    idle_candidates = [
        state
        for state in workers
        if state.status == W.RUNNING
        and state.desired_status == DesiredStatus.RUNNING
        and state.capacity.sessions == 0
        and state.id not in needed
        and state.empty_since is not None
    ]
    chosen: set[str] = set()
    if policy.autoscaling_enabled:
        for state in sorted(idle_candidates, key=lambda s: (s.empty_since, -s.cost_per_hour, s.id)):
            empty_for = now - state.empty_since
            last = last_scale_up.get(state.region)
            if last is not None and now - last < policy.scale_down_cooldown:
                continue
            if state.up_since is not None and now - state.up_since < policy.scale_down_cooldown:
                continue
            if active.get(state.region, 0) - 1 < policy.min_workers:
                continue
            active[state.region] -= 1
            chosen.add(state.id)
            decisions.append(
                Decision(
                    A.DRAIN,
                    f"scale down: {state.name} has held no session for {_minutes(empty_for)} and no pending session "
                    f"within the lead window needs it ({active[state.region] + 1} active in {state.region}, "
                    f"minimum {policy.min_workers})",
                    region=state.region,
                    worker_id=state.id,
                    worker_name=state.name,
                )
            )
    if not policy.idle_detection_enabled:
        return decisions
    for state in idle_candidates:
        if state.id in chosen or not state.idle_detection_enabled:
            continue
        idle_since = max(t for t in (state.empty_since, state.last_activity_at) if t is not None)
        idle_for = now - idle_since
        if idle_for < policy.idle_timeout or active.get(state.region, 0) - 1 < policy.min_workers:
            continue
        active[state.region] -= 1
        decisions.append(
            Decision(
                A.PAUSE,
                f"idle: {state.name} has had no session and no CML activity for {_minutes(idle_for)} "
                f"(timeout {_minutes(policy.idle_timeout)}); stopped until demand returns",
                region=state.region,
                worker_id=state.id,
                worker_name=state.name,
            )
        )
    return decisions
