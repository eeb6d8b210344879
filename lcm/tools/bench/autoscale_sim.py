"""The simulated clock behind `bench_autoscale` (SPEC §10): simulated workers and sessions, the ideal capacity
curve and `Replay`, which runs one scaling policy (LCM's, or a peer of `autoscale_peers`) over a booking trace
on a fleet of one or more worker templates; the figures are described in `lcm.tools.bench.autoscale`.

Each tick (one minute by default):
1. workers and sessions move on: a launched (or restarted) worker is RUNNING `startup_minutes` of its template
   after the decision; a placed session instantiates from `start − boot lead` (or at once when placed later)
   and is READY `instantiate` minutes after; a session holds its worker's capacity from placement until
   `teardown` minutes after its timeslot ends; a stopping worker is stopped `stop` minutes later;
2. placement: every PENDING session due within the placement lead goes to a RUNNING worker by
   `scheduling.placement.choose_worker` (end-time aware when the policy says so), soonest start first;
3. the policy scales (launch, start, drain);
4. a DRAINING worker with no session left stops.
"""

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lcm.tools.bench.autoscale_traces import (  # noqa: F401 - the trace API, where older callers import it from
    COLUMNS,
    PROFILES,
    Booking,
    generate_exam_day,
    generate_trace,
    read_trace,
)
from scheduling.capacity import Demand, WorkerCapacity
from scheduling.placement import choose_worker
from workers.autoscaler import Policy, TemplateOption

DAY = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; the clock's origin


@dataclass
class SimSession:
    id: str
    booking: Booking
    status: str = "PENDING"
    worker: str | None = None
    placed_at: float | None = None
    ready_at: float | None = None
    release_at: float | None = None


@dataclass
class SimWorker:
    id: str
    template: TemplateOption
    status: str  # STARTING, RUNNING, DRAINING, STOPPING, STOPPED
    ready_at: float | None = None  # STARTING: when RUNNING
    stop_done_at: float | None = None  # STOPPING: when STOPPED
    billed_since: float | None = None
    billed_minutes: float = 0.0
    empty_since: float = 0.0
    up_since: float = 0.0
    lcm_stopped: bool = False
    sessions: set[str] = field(default_factory=set)
    used: Demand = field(default_factory=lambda: Demand(0, 0, 0, 0, 0))
    ends: float = 0.0  # the latest release of the sessions it holds (0: none)
    served: bool = False  # has held a session since it last became RUNNING

    @property
    def billed(self) -> bool:
        return self.billed_since is not None


def _at(minute: float) -> datetime:
    return DAY + timedelta(minutes=minute)


def _add(a: Demand, b: Demand, sign: int = 1) -> Demand:
    return Demand(
        a.cpu_cores + sign * b.cpu_cores,
        a.memory_gb + sign * b.memory_gb,
        a.storage_gb + sign * b.storage_gb,
        a.node_count + sign * b.node_count,
        a.ports + sign * b.ports,
    )


def capacity_of(worker: SimWorker, status: str | None = None, used: Demand | None = None) -> WorkerCapacity:
    template, used = worker.template, used or worker.used
    return WorkerCapacity(
        worker_id=worker.id,
        name=worker.id,
        status=status or worker.status,
        license_type=template.license_type,
        cml_version=template.cml_version,
        cpu_total=template.cpu_cores,
        memory_total=template.memory_gb,
        storage_total=template.storage_gb,
        nodes_total=template.max_nodes,
        ports_total=template.ports,
        cpu_used=used.cpu_cores,
        memory_used=used.memory_gb,
        storage_used=used.storage_gb,
        nodes_used=used.node_count,
        ports_used=used.ports,
        sessions=len(worker.sessions),
    )


def ideal_workers(demands: list[Demand], template: TemplateOption) -> int:
    """The fewest workers of the template that could hold these demands: the per-dimension lower bound."""
    if not demands:
        return 0
    bounds = [
        (sum(d.cpu_cores for d in demands), template.cpu_cores),
        (sum(d.memory_gb for d in demands), template.memory_gb),
        (sum(d.storage_gb for d in demands), template.storage_gb),
        (sum(d.node_count for d in demands), template.max_nodes),
        (sum(d.ports for d in demands), template.ports),
    ]
    return max(math.ceil(used / total) for used, total in bounds if total > 0)


# Where billed worker time goes: booting, stopping, RUNNING but empty before its first session (launched early or
# for a reserve), RUNNING and empty after holding sessions (drain delay, kept for coming demand), holding sessions
# up to the ideal curve, and holding sessions beyond it (fragmentation: sessions spread over more workers).
SPENT = ("boot", "stop", "idle_unused", "idle_emptied", "busy_ideal", "fragmentation")


@dataclass(frozen=True)
class Leads:
    """The replay's timings, in minutes."""

    placement: int = 35
    boot: int = 20
    instantiate: float = 2.0
    teardown: float = 1.0
    stop: float = 2.0
    tick: float = 1.0


def replay(
    bookings: list[Booking],
    template: TemplateOption,
    policy: Policy,
    *,
    placement_lead: int = 35,
    boot_lead: int = 20,
    instantiate_minutes: float = 2.0,
    teardown_minutes: float = 1.0,
    stop_minutes: float = 2.0,
    tick_minutes: float = 1.0,
) -> dict:
    """LCM's autoscaler on one template (see `lcm.tools.bench.autoscale`); returns the figures."""
    # Imported here: the LCM scaler lives beside the peers, which build on this module.
    from lcm.tools.bench.autoscale_peers import LcmScaler

    leads = Leads(placement_lead, boot_lead, instantiate_minutes, teardown_minutes, stop_minutes, tick_minutes)
    return Replay(bookings, [template], LcmScaler(policy), leads).run()


def _holding(bookings: list[Booking], minute: float, lead: float, teardown: float) -> list[Demand]:
    """The demands holding capacity at `minute` when capacity is claimed from `start − lead` (or the booking)."""
    return [b.demand for b in bookings if max(b.booked, b.start - lead) <= minute < b.end + teardown]


def ideal_curve(bookings: list[Booking], templates: list[TemplateOption], leads: Leads, horizon: float) -> dict:
    """The ideal capacity curve over the replay's ticks: per tick the cheapest template's per-dimension lower bound
    (instant boots, perfect packing) of what the bookings hold then. Minutes of it, its cost, its peak."""
    minutes = cost = strict = 0.0
    peak, per_tick = 0, {}
    minute = float(min(b.booked for b in bookings))
    while minute <= horizon:
        held = _holding(bookings, minute, leads.placement, leads.teardown)
        options = [(ideal_workers(held, t) * t.cost_per_hour, ideal_workers(held, t)) for t in templates]
        rate, count = min(options)
        minutes += count * leads.tick
        cost += rate * leads.tick / 60
        peak = max(peak, count)
        per_tick[minute] = count
        strict_held = _holding(bookings, minute, leads.boot, leads.teardown)
        strict += min(ideal_workers(strict_held, t) * t.cost_per_hour for t in templates) * leads.tick / 60
        minute += leads.tick
    return {"hours": minutes / 60, "cost": cost, "peak": peak, "strict_cost": strict, "per_tick": per_tick}


def boot_floor(counts: list[int], overhead: float, tick: float) -> float:
    """The fewest billed worker-minutes of any policy whose workers are RUNNING whenever the ideal curve needs them
    (`counts`: its workers per tick) when every worker pays `overhead` minutes (a boot and a stop) each time it is
    brought up: perfect packing and free migration, as the ideal curve, but boots and stops billed. Level by level
    (the k-th worker is needed while the curve is at k or more), a level costs its ticks, one overhead for its first
    run and, for each gap between runs, the gap (kept RUNNING) or an overhead (stopped and booted again), whichever
    is less. Any schedule of workers costs at least this: its k-th worker level covers the curve's k-th, and each
    boot raises one level. `bench_autoscale` shows it beside the ideal curve: where it is above 1.08 × the ideal, no
    policy that has capacity ready by the placement lead meets that target."""
    total = 0.0
    for level in range(1, max(counts, default=0) + 1):
        started, gap = False, 0.0
        for count in counts:
            if count < level:
                gap += tick if started else 0.0
                continue
            total += tick + (min(gap, overhead) if started else overhead)
            started, gap = True, 0.0
    return total


class Replay:
    """One replay of one policy (`scaler`) over the bookings on a fleet of `templates`.

    The scaler's `tick(replay)` scales through `launch`, `start`, `cancel_drain` and `drain`; its `end_aware`
    says whether placement is told the sessions' ends."""

    def __init__(self, bookings: list[Booking], templates: list[TemplateOption], scaler, leads: Leads):
        self.bookings, self.templates, self.scaler, self.leads = bookings, templates, scaler, leads
        ordered = sorted(bookings, key=lambda b: (b.booked, b.start))
        self.sessions = [SimSession(f"s{i}", b) for i, b in enumerate(ordered)]
        self.by_id = {s.id: s for s in self.sessions}
        self.place_at = {s.id: max(s.booking.booked, s.booking.start - leads.placement) for s in self.sessions}
        self.workers: dict[str, SimWorker] = {}
        self.last_scale_up: dict[str, datetime] = {}
        self.decisions: dict[str, int] = {}
        self.horizon = max(b.end for b in bookings) + leads.placement + 180
        self.t = float(min(b.booked for b in bookings))
        self.peak_workers = 0
        self.spent: dict[str, float] = dict.fromkeys(SPENT, 0.0)

    # --- what the scalers call ---------------------------------------------------------

    def launch(self, template: TemplateOption, *, ready_at: float | None = None) -> SimWorker:
        t = self.t
        worker = SimWorker(f"w{len(self.workers) + 1}", template, "STARTING")
        worker.ready_at = t + template.startup_minutes if ready_at is None else ready_at
        worker.billed_since = worker.ready_at - template.startup_minutes
        self.workers[worker.id] = worker
        self.last_scale_up[template.region] = _at(t)
        self._count("LAUNCH")
        return worker

    def start(self, worker: SimWorker) -> None:
        t = self.t
        begin = max(t, worker.stop_done_at or t)
        worker.status, worker.ready_at, worker.lcm_stopped = "STARTING", begin + worker.template.startup_minutes, False
        if worker.billed_since is None:
            worker.billed_since = t
        self.last_scale_up[worker.template.region] = _at(t)
        self._count("START")

    def cancel_drain(self, worker: SimWorker) -> None:
        worker.status = "RUNNING"
        self._count("CANCEL_DRAIN")

    def drain(self, worker: SimWorker) -> None:
        worker.status, worker.lcm_stopped = "DRAINING", True
        self._count("DRAIN")

    def _count(self, action: str) -> None:
        self.decisions[action] = self.decisions.get(action, 0) + 1

    def pending(self) -> list[SimSession]:
        return [s for s in self.sessions if s.status == "PENDING" and s.booking.booked <= self.t]

    # --- the clock -----------------------------------------------------------------------

    def run(self) -> dict:
        self.scaler.prepare(self)
        while self.t <= self.horizon:
            self._move_workers()  # 1. time moves workers and sessions on
            self._move_sessions()
            self._place()  # 2. placement
            self.scaler.tick(self)  # 3. the policy
            self._stop_drained()  # 4. drained workers stop
            self._account()
            billed = sum(1 for w in self.workers.values() if w.billed)
            self.peak_workers = max(self.peak_workers, billed)
            self.t += self.leads.tick
        for worker in self.workers.values():
            _bill_stop(worker, self.t)
        return self._figures()

    def _move_workers(self) -> None:
        t = self.t
        for worker in self.workers.values():
            if worker.status == "STARTING" and worker.ready_at <= t:
                worker.status, worker.empty_since, worker.up_since, worker.served = "RUNNING", t, t, False
            elif worker.status == "STOPPING" and worker.stop_done_at <= t:
                worker.status = "STOPPED"
                _bill_stop(worker, worker.stop_done_at)

    def _move_sessions(self) -> None:
        t = self.t
        for session in self.sessions:
            if session.status == "SCHEDULED" and session.ready_at <= t:
                session.status = "READY"
            if session.status in ("SCHEDULED", "READY") and session.release_at <= t:
                session.status = "DONE"
                worker = self.workers[session.worker]
                worker.sessions.discard(session.id)
                worker.used = _add(worker.used, session.booking.demand, -1)
                if not worker.sessions:
                    worker.empty_since, worker.ends = t, 0.0
            elif session.status == "PENDING" and session.booking.end <= t:
                session.status = "EXPIRED"

    def _place(self) -> None:
        """Place every due PENDING session, soonest start first."""
        t, leads = self.t, self.leads
        due = [s for s in self.pending() if self.place_at[s.id] <= t]
        due.sort(key=lambda s: (s.booking.start, s.booking.booked, s.id))
        end_aware = getattr(self.scaler, "end_aware", False)
        for session in due:
            running = [w for w in self.workers.values() if w.status == "RUNNING"]
            capacities = [capacity_of(w) for w in running]
            release = session.booking.end + leads.teardown
            ends = {w.id: w.ends for w in running} if end_aware else None
            chosen = choose_worker(capacities, session.booking.demand, session_end=release, worker_ends=ends, now=t)
            if chosen is None:
                continue
            worker = self.workers[chosen.worker_id]
            worker.sessions.add(session.id)
            worker.used = _add(worker.used, session.booking.demand)
            worker.ends = max(worker.ends, release)
            worker.served = True
            session.status, session.worker, session.placed_at = "SCHEDULED", worker.id, t
            session.ready_at = max(t, session.booking.start - leads.boot) + leads.instantiate
            session.release_at = release

    def _account(self) -> None:
        """Where this tick's billed worker-minutes go (`SPENT`), in cost-weighted minutes of the cheapest template's
        rate, so a mixed fleet's figures add up to its cost ratio."""
        tick, unit = self.leads.tick, min(t.cost_per_hour for t in self.templates)
        busy = 0.0
        for worker in self.workers.values():
            if not worker.billed:
                continue
            weight = tick * worker.template.cost_per_hour / unit
            if worker.status == "STARTING":
                self.spent["boot"] += weight
            elif worker.status == "STOPPING":
                self.spent["stop"] += weight
            elif worker.sessions:
                busy += weight
            elif not worker.served:
                self.spent["idle_unused"] += weight
            else:
                self.spent["idle_emptied"] += weight
        held = _holding(self.bookings, self.t, self.leads.placement, self.leads.teardown)
        ideal = min(ideal_workers(held, t) * t.cost_per_hour for t in self.templates) * tick / unit
        self.spent["busy_ideal"] += min(busy, ideal)
        self.spent["fragmentation"] += max(0.0, busy - ideal)

    def _stop_drained(self) -> None:
        for worker in self.workers.values():
            if worker.status == "DRAINING" and not worker.sessions:
                worker.status, worker.stop_done_at = "STOPPING", self.t + self.leads.stop

    def _figures(self) -> dict:
        sessions, workers = self.sessions, self.workers
        lead, instantiate = self.leads.placement, self.leads.instantiate
        ideal = ideal_curve(self.bookings, self.templates, self.leads, self.horizon)
        ahead = [s for s in sessions if s.booking.start - s.booking.booked >= lead]
        on_time = [s for s in ahead if s.ready_at is not None and s.ready_at <= s.booking.start]
        walk_ins = [s for s in sessions if s.booking.start - s.booking.booked < lead]
        # A walk-in is on time when it waited for no capacity: READY by its start, or as soon as it can be
        # instantiated when booked closer to its start than that.
        walk_ins_on_time = [
            s
            for s in walk_ins
            if s.ready_at is not None and s.ready_at <= max(s.booking.start, s.booking.booked + instantiate)
        ]
        worker_hours = sum(w.billed_minutes for w in workers.values()) / 60
        floor_hours = None
        if len(self.templates) == 1:  # a mixed fleet's floor would need the template per level: not computed
            overhead = self.templates[0].startup_minutes + self.leads.stop
            floor_hours = (
                boot_floor([ideal["per_tick"][t] for t in sorted(ideal["per_tick"])], overhead, self.leads.tick) / 60
            )
        cost = sum(w.billed_minutes * w.template.cost_per_hour for w in workers.values()) / 60
        mix: dict[str, int] = {}
        for w in workers.values():
            mix[w.template.name] = mix.get(w.template.name, 0) + 1
        return {
            "sessions": len(sessions),
            "booked_ahead": len(ahead),
            "booked_ahead_ready_on_time": len(on_time),
            "on_time_percent": round(100.0 * len(on_time) / len(ahead), 2) if ahead else 100.0,
            "late": sorted(s.booking.start for s in ahead if s not in on_time)[:20],
            "walk_ins": len(walk_ins),
            "walk_ins_ready_on_time": len(walk_ins_on_time),
            "walk_ins_percent": round(100.0 * len(walk_ins_on_time) / len(walk_ins), 2) if walk_ins else 100.0,
            "expired": sum(1 for s in sessions if s.status == "EXPIRED"),
            "worker_hours": round(worker_hours, 2),
            "ideal_worker_hours": round(ideal["hours"], 2),
            "ratio": round(cost / ideal["cost"], 4) if ideal["cost"] else None,
            # The boot-aware floor (`boot_floor`): the least any policy with capacity ready by the placement lead
            # bills, in worker-hours and as a ratio to the ideal curve; None for a mixed fleet.
            "floor_worker_hours": round(floor_hours, 2) if floor_hours is not None else None,
            "floor_ratio": round(floor_hours / ideal["hours"], 4)
            if floor_hours is not None and ideal["hours"]
            else None,
            "strict_ideal_cost": round(ideal["strict_cost"], 2),
            "workers_launched": len(workers),
            "fleet_mix": mix,
            "peak_workers": self.peak_workers,
            "ideal_peak_workers": ideal["peak"],
            "decisions": dict(self.decisions),
            "cost": round(cost, 2),
            "ideal_cost": round(ideal["cost"], 2),
            # Billed time by what it went to, as a fraction of the ideal curve (cost-weighted): their sum less
            # `busy_ideal` is the ratio's excess over 1 (short ideal ticks no busy worker covers lower busy_ideal).
            "spent": {k: round(v / 60 / ideal_unit_hours, 4) for k, v in self.spent.items()}
            if (ideal_unit_hours := ideal["cost"] / min(t.cost_per_hour for t in self.templates))
            else {},
        }


def _bill_stop(worker: SimWorker, at: float) -> None:
    if worker.billed_since is not None:
        worker.billed_minutes += at - worker.billed_since
        worker.billed_since = None
