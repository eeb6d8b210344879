"""The simulated clock behind `bench_autoscale` (SPEC §6.3): booking traces (read, generated), the simulated
workers and sessions, the ideal capacity curve and `replay`; the figures are described in
`lcm.tools.bench.autoscale`.
"""

import csv
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from scheduling.capacity import Demand, WorkerCapacity
from scheduling.placement import choose_worker
from workers.autoscaler import PendingSession, Policy, TemplateOption, WorkerState, plan
from workers.states import ScaleAction

A = ScaleAction
DAY = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; the clock's origin
COLUMNS = (
    "booked_minute", "start_minute", "duration_minutes", "cpu_cores", "memory_gb", "storage_gb", "node_count",
    "ports", "license",
)  # fmt: skip

# Lab definitions of the synthetic day: (weight, cpu, memory GB, storage GB, nodes, ports, minutes). A booking
# without an end lasts its definition's `max_duration_minutes` (SPEC §5.1), so each definition has its length.
PROFILES = ((0.6, 2, 4, 10, 3, 3, 60), (0.3, 4, 8, 20, 6, 5, 90), (0.1, 8, 16, 40, 12, 8, 120))


@dataclass(frozen=True)
class Booking:
    booked: int  # minutes from the trace's origin
    start: int
    duration: int
    demand: Demand

    @property
    def end(self) -> int:
        return self.start + self.duration


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


def read_trace(path) -> list[Booking]:
    """The bookings of a trace file; raises ValueError naming the bad line."""
    bookings = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].lstrip().startswith("#"):
                continue
            if row[0].strip() == COLUMNS[0]:
                continue  # header
            try:
                booked, start, duration, cpu, memory, storage, nodes, ports = (int(v) for v in row[:8])
                licence = row[8].strip().upper() if len(row) > 8 else ""
            except (ValueError, IndexError):
                raise ValueError(f"line {number}: expected {','.join(COLUMNS)}") from None
            if duration <= 0 or booked > start or min(cpu, memory, storage, nodes, ports) < 0:
                raise ValueError(f"line {number}: needs duration > 0, booked ≤ start and no negative demand")
            demand = Demand(cpu, memory, storage, nodes, ports, (licence,) if licence else ())
            bookings.append(Booking(booked, start, duration, demand))
    if not bookings:
        raise ValueError("the trace holds no bookings")
    return bookings


def generate_trace(path, *, sessions: int = 400, seed: int = 7) -> list[Booking]:
    """Write a synthetic day: bookings of three lab definitions (60% small 60-minute labs, 30% medium 90-minute,
    10% large 120-minute) starting 07:00–19:00 on a 5-minute grid, busiest around midday, mostly booked hours
    ahead, one in ten a walk-in booked under 30 minutes ahead."""
    rng = random.Random(seed)
    bookings = []
    for _ in range(sessions):
        start = min(19 * 60, max(7 * 60, int(rng.gauss(12.5 * 60, 2.6 * 60))))
        start -= start % 5
        walk_in = rng.random() < 0.1
        lead = rng.randint(0, 30) if walk_in else min(start, 35 + int(rng.expovariate(1 / 360)))
        pick = rng.random()
        profile = PROFILES[-1]
        for candidate in PROFILES:
            pick -= candidate[0]
            if pick <= 0:
                profile = candidate
                break
        _, cpu, memory, storage, nodes, ports, duration = profile
        bookings.append(Booking(start - lead, start, duration, Demand(cpu, memory, storage, nodes, ports)))
    bookings.sort(key=lambda b: (b.booked, b.start))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(f"# LCM booking trace: a synthetic day of {sessions} sessions (seed {seed}); minutes from 00:00\n")
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for b in bookings:
            d = b.demand
            row = [b.booked, b.start, b.duration, d.cpu_cores, d.memory_gb, d.storage_gb, d.node_count, d.ports, ""]
            writer.writerow(row)
    return bookings


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


def _capacity(template: TemplateOption, worker: SimWorker, status: str) -> WorkerCapacity:
    return WorkerCapacity(
        worker_id=worker.id,
        name=worker.id,
        status=status,
        license_type=template.license_type,
        cml_version=template.cml_version,
        cpu_total=template.cpu_cores,
        memory_total=template.memory_gb,
        storage_total=template.storage_gb,
        nodes_total=template.max_nodes,
        ports_total=template.ports,
        cpu_used=worker.used.cpu_cores,
        memory_used=worker.used.memory_gb,
        storage_used=worker.used.storage_gb,
        nodes_used=worker.used.node_count,
        ports_used=worker.used.ports,
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
    """Replay the bookings on a simulated clock; returns the figures (see `lcm.tools.bench.autoscale`)."""
    leads = Leads(placement_lead, boot_lead, instantiate_minutes, teardown_minutes, stop_minutes, tick_minutes)
    return Replay(bookings, template, policy, leads).run()


@dataclass(frozen=True)
class Leads:
    """The replay's timings, in minutes."""

    placement: int
    boot: int
    instantiate: float
    teardown: float
    stop: float
    tick: float


def _holding(bookings: list[Booking], minute: float, lead: float, teardown: float) -> list[Demand]:
    """The demands holding capacity at `minute` when capacity is claimed from `start − lead` (or the booking)."""
    return [b.demand for b in bookings if max(b.booked, b.start - lead) <= minute < b.end + teardown]


def _bill_stop(worker: SimWorker, at: float) -> None:
    if worker.billed_since is not None:
        worker.billed_minutes += at - worker.billed_since
        worker.billed_since = None


class Replay:
    """One replay: each tick moves workers and sessions on, places the due sessions, runs the autoscaler and
    stops drained workers; then the peers (the ideal capacity curves) over the same ticks."""

    def __init__(self, bookings: list[Booking], template: TemplateOption, policy: Policy, leads: Leads):
        self.bookings, self.template, self.policy, self.leads = bookings, template, policy, leads
        ordered = sorted(bookings, key=lambda b: (b.booked, b.start))
        self.sessions = [SimSession(f"s{i}", b) for i, b in enumerate(ordered)]
        self.workers: dict[str, SimWorker] = {}
        self.last_scale_up: dict[str, datetime] = {}
        self.decisions: dict[str, int] = {}
        self.horizon = max(b.end for b in bookings) + leads.placement + 180
        self.t = float(min(b.booked for b in bookings))
        self.peak_workers = 0
        self.billed_curve: dict[int, int] = {}

    def run(self) -> dict:
        while self.t <= self.horizon:
            self._move_workers()  # 1. time moves workers and sessions on
            self._move_sessions()
            due = self._place()  # 2. placement
            self._autoscale(due)  # 3. the autoscaler
            self._stop_drained()  # 4. drained workers stop
            billed = sum(1 for w in self.workers.values() if w.billed_since is not None)
            self.peak_workers = max(self.peak_workers, billed)
            if self.t % 30 == 0:
                self.billed_curve[int(self.t)] = billed
            self.t += self.leads.tick
        for worker in self.workers.values():
            _bill_stop(worker, self.t)
        return self._figures(*self._ideal())

    def _move_workers(self) -> None:
        t = self.t
        for worker in self.workers.values():
            if worker.status == "STARTING" and worker.ready_at <= t:
                worker.status, worker.empty_since, worker.up_since = "RUNNING", t, t
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
                    worker.empty_since = t
            elif session.status == "PENDING" and session.booking.end <= t:
                session.status = "EXPIRED"

    def _place(self) -> list[SimSession]:
        """Place every due PENDING session, soonest start first; returns the due ones (placed or not)."""
        t, template, leads = self.t, self.template, self.leads
        due = [
            s
            for s in self.sessions
            if s.status == "PENDING" and s.booking.booked <= t and s.booking.start <= t + leads.placement
        ]
        due.sort(key=lambda s: (s.booking.start, s.booking.booked, s.id))
        for session in due:
            capacities = [_capacity(template, w, w.status) for w in self.workers.values() if w.status == "RUNNING"]
            chosen = choose_worker(capacities, session.booking.demand)
            if chosen is None:
                continue
            worker = self.workers[chosen.worker_id]
            worker.sessions.add(session.id)
            worker.used = _add(worker.used, session.booking.demand)
            session.status, session.worker, session.placed_at = "SCHEDULED", worker.id, t
            session.ready_at = max(t, session.booking.start - leads.boot) + leads.instantiate
            session.release_at = session.booking.end + leads.teardown
        return due

    def _autoscale(self, due: list[SimSession]) -> None:
        template = self.template
        pending = [
            PendingSession(s.id, s.booking.demand, _at(s.booking.start), template.cml_version, "")
            for s in due
            if s.status == "PENDING"
        ]
        states = [
            WorkerState(
                capacity=_capacity(template, w, w.status),
                region=template.region,
                desired_status="RUNNING" if w.status in ("STARTING", "RUNNING", "DRAINING") else "STOPPED",
                lcm_stopped=w.lcm_stopped,
                empty_since=_at(w.empty_since),
                last_activity_at=_at(w.empty_since),
                cost_per_hour=template.cost_per_hour,
                up_since=_at(w.up_since),
            )
            for w in self.workers.values()
        ]
        for decision in plan(_at(self.t), pending, states, [template], self.policy, last_scale_up=self.last_scale_up):
            self.decisions[decision.action] = self.decisions.get(decision.action, 0) + 1
            self._apply(decision)

    def _apply(self, decision) -> None:
        t, template = self.t, self.template
        if decision.action == A.LAUNCH:
            worker = SimWorker(f"w{len(self.workers) + 1}", "STARTING", ready_at=t + template.startup_minutes)
            worker.billed_since = t
            self.workers[worker.id] = worker
            self.last_scale_up[template.region] = _at(t)
        elif decision.action == A.START:
            worker = self.workers[decision.worker_id]
            begin = max(t, worker.stop_done_at or t)
            worker.status, worker.ready_at, worker.lcm_stopped = "STARTING", begin + template.startup_minutes, False
            if worker.billed_since is None:
                worker.billed_since = t
            self.last_scale_up[template.region] = _at(t)
        elif decision.action == A.CANCEL_DRAIN:
            self.workers[decision.worker_id].status = "RUNNING"
        elif decision.action in (A.DRAIN, A.PAUSE):
            worker = self.workers[decision.worker_id]
            worker.status, worker.lcm_stopped = "DRAINING", True

    def _stop_drained(self) -> None:
        for worker in self.workers.values():
            if worker.status == "DRAINING" and not worker.sessions:
                worker.status, worker.stop_done_at = "STOPPING", self.t + self.leads.stop

    def _ideal(self) -> tuple[float, float, list]:
        """The peers over the same ticks: minutes of the ideal and the strict ideal curve, and the curve shown."""
        bookings, template, leads = self.bookings, self.template, self.leads
        ideal_minutes = strict_minutes = 0.0
        curve = []
        minute = float(min(b.booked for b in bookings))
        while minute <= self.horizon:
            held = _holding(bookings, minute, leads.placement, leads.teardown)
            strict = _holding(bookings, minute, leads.boot, leads.teardown)
            ideal_now = ideal_workers(held, template)
            ideal_minutes += ideal_now * leads.tick
            if minute in self.billed_curve and (ideal_now or self.billed_curve[minute]):
                curve.append((f"{int(minute) // 60:02d}:{int(minute) % 60:02d}", self.billed_curve[minute], ideal_now))
            strict_minutes += ideal_workers(strict, template) * leads.tick
            minute += leads.tick
        return ideal_minutes, strict_minutes, curve

    def _figures(self, ideal_minutes: float, strict_minutes: float, curve: list) -> dict:
        sessions, workers, template = self.sessions, self.workers, self.template
        lead = self.leads.placement
        by_id = {s.id: s for s in sessions}
        ahead = [s for s in sessions if s.booking.start - s.booking.booked >= lead]
        on_time = [s for s in ahead if s.ready_at is not None and s.ready_at <= s.booking.start]
        walk_ins = [s for s in sessions if s.booking.start - s.booking.booked < lead]
        walk_ins_on_time = [s for s in walk_ins if s.ready_at is not None and s.ready_at <= s.booking.start]
        worker_hours = sum(w.billed_minutes for w in workers.values()) / 60
        ideal_hours = ideal_minutes / 60
        late = sorted(s.id for s in ahead if s not in on_time)
        return {
            "sessions": len(sessions),
            "booked_ahead": len(ahead),
            "booked_ahead_ready_on_time": len(on_time),
            "on_time_percent": round(100.0 * len(on_time) / len(ahead), 2) if ahead else 100.0,
            "late": [by_id[i].booking.start for i in late][:20],
            "walk_ins": len(walk_ins),
            "walk_ins_ready_on_time": len(walk_ins_on_time),
            "expired": sum(1 for s in sessions if s.status == "EXPIRED"),
            "worker_hours": round(worker_hours, 2),
            "ideal_worker_hours": round(ideal_hours, 2),
            "ratio": round(worker_hours / ideal_hours, 4) if ideal_hours else None,
            "strict_ideal_worker_hours": round(strict_minutes / 60, 2),
            "workers_launched": len(workers),
            "peak_workers": self.peak_workers,
            "decisions": {str(action): count for action, count in self.decisions.items()},
            "curve": curve,  # (time of day, workers billed, ideal workers) every 30 minutes
            "cost": round(worker_hours * template.cost_per_hour, 2),
            "ideal_cost": round(ideal_hours * template.cost_per_hour, 2),
        }
