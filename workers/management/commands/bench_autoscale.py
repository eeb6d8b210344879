"""`manage.py bench_autoscale --trace FILE`: replay a day of bookings through the autoscaler (SPEC §6.3).

No EC2, no database writes: a simulated clock ticks (one minute by default) and each tick does what
the loops do, with the same pure functions:
1. workers and sessions move on: a launched (or restarted) worker is RUNNING `startup_minutes` of its
   template after the decision; a placed session instantiates from `start − boot lead` (or at once
   when placed later) and is READY `--instantiate-minutes` after; a session holds its worker's capacity
   from placement until `--teardown-minutes` after its timeslot ends; a stopping worker is stopped
   `--stop-minutes` later;
2. placement: every PENDING session due within the placement lead goes to a RUNNING worker by
   `scheduling.placement.choose_worker`, soonest start first;
3. the autoscaler: `workers.autoscaler.plan` on what is left pending and the fleet, its decisions
   applied (LAUNCH, START, CANCEL_DRAIN, DRAIN, PAUSE);
4. a DRAINING worker with no session left stops.

Figures: how many sessions booked at least the placement lead ahead were READY before their start
(target: all of them), and the worker-hours billed (from the launch or start decision until stopped,
boots and stops included) against the peer computed in the same run: the ideal capacity curve, i.e.
at every tick the fewest workers of the template that could hold the capacity the booked sessions
claim then (from placement, `max(booked, start − placement lead)`, to the end of their timeslot plus
teardown), as the per-dimension lower bound `max(ceil(Σ demand / capacity))` with instant boots and
perfect packing. Target: worker-hours ≤ 1.10 × ideal. A stricter second peer (capacity only from
`start − boot lead`) is printed for information.

The trace is CSV, one booking per line, times in minutes from the trace's day start:
`booked_minute,start_minute,duration_minutes,cpu_cores,memory_gb,storage_gb,node_count,ports,license`
(`license` empty = any; `#` lines are comments). `--generate FILE` writes a synthetic day
(`workers/traces/day.csv` is one, seed 7).
"""

import csv
import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings

from lcm.management.command_utils import LcmCommand, fail
from lcm.versions import ami_version_hint
from scheduling.capacity import Demand, WorkerCapacity
from scheduling.placement import choose_worker
from workers.autoscaler import PendingSession, Policy, TemplateOption, WorkerState, plan
from workers.models import ScaleAction

A = ScaleAction
DAY = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; the clock's origin
COLUMNS = (
    "booked_minute", "start_minute", "duration_minutes", "cpu_cores", "memory_gb", "storage_gb", "node_count",
    "ports", "license",
)  # fmt: skip
DEFAULT_TRACE = Path(settings.BASE_DIR) / "workers" / "traces" / "day.csv"
TARGET_RATIO = 1.10

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
    """Replay the bookings on a simulated clock; returns the figures (see the module docstring)."""
    sessions = [SimSession(f"s{i}", b) for i, b in enumerate(sorted(bookings, key=lambda b: (b.booked, b.start)))]
    by_id = {s.id: s for s in sessions}
    workers: dict[str, SimWorker] = {}
    last_scale_up: dict[str, datetime] = {}
    decisions: dict[str, int] = {}
    horizon = max(b.end for b in bookings) + placement_lead + 180
    t = float(min(b.booked for b in bookings))
    peak_workers = 0
    billed_curve: dict[int, int] = {}

    def bill_stop(worker: SimWorker, at: float) -> None:
        if worker.billed_since is not None:
            worker.billed_minutes += at - worker.billed_since
            worker.billed_since = None

    while t <= horizon:
        # 1. Time moves workers and sessions on.
        for worker in workers.values():
            if worker.status == "STARTING" and worker.ready_at <= t:
                worker.status, worker.empty_since, worker.up_since = "RUNNING", t, t
            elif worker.status == "STOPPING" and worker.stop_done_at <= t:
                worker.status = "STOPPED"
                bill_stop(worker, worker.stop_done_at)
        for session in sessions:
            if session.status == "SCHEDULED" and session.ready_at <= t:
                session.status = "READY"
            if session.status in ("SCHEDULED", "READY") and session.release_at <= t:
                session.status = "DONE"
                worker = workers[session.worker]
                worker.sessions.discard(session.id)
                worker.used = _add(worker.used, session.booking.demand, -1)
                if not worker.sessions:
                    worker.empty_since = t
            elif session.status == "PENDING" and session.booking.end <= t:
                session.status = "EXPIRED"
        # 2. Placement.
        due = [
            s
            for s in sessions
            if s.status == "PENDING" and s.booking.booked <= t and s.booking.start <= t + placement_lead
        ]
        due.sort(key=lambda s: (s.booking.start, s.booking.booked, s.id))
        for session in due:
            capacities = [_capacity(template, w, w.status) for w in workers.values() if w.status == "RUNNING"]
            chosen = choose_worker(capacities, session.booking.demand)
            if chosen is None:
                continue
            worker = workers[chosen.worker_id]
            worker.sessions.add(session.id)
            worker.used = _add(worker.used, session.booking.demand)
            session.status, session.worker, session.placed_at = "SCHEDULED", worker.id, t
            session.ready_at = max(t, session.booking.start - boot_lead) + instantiate_minutes
            session.release_at = session.booking.end + teardown_minutes
        # 3. The autoscaler.
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
            for w in workers.values()
        ]
        for decision in plan(_at(t), pending, states, [template], policy, last_scale_up=last_scale_up):
            decisions[decision.action] = decisions.get(decision.action, 0) + 1
            if decision.action == A.LAUNCH:
                worker = SimWorker(f"w{len(workers) + 1}", "STARTING", ready_at=t + template.startup_minutes)
                worker.billed_since = t
                workers[worker.id] = worker
                last_scale_up[template.region] = _at(t)
            elif decision.action == A.START:
                worker = workers[decision.worker_id]
                begin = max(t, worker.stop_done_at or t)
                worker.status, worker.ready_at, worker.lcm_stopped = "STARTING", begin + template.startup_minutes, False
                if worker.billed_since is None:
                    worker.billed_since = t
                last_scale_up[template.region] = _at(t)
            elif decision.action == A.CANCEL_DRAIN:
                workers[decision.worker_id].status = "RUNNING"
            elif decision.action in (A.DRAIN, A.PAUSE):
                worker = workers[decision.worker_id]
                worker.status, worker.lcm_stopped = "DRAINING", True
        # 4. Drained workers stop.
        for worker in workers.values():
            if worker.status == "DRAINING" and not worker.sessions:
                worker.status, worker.stop_done_at = "STOPPING", t + stop_minutes
        billed = sum(1 for w in workers.values() if w.billed_since is not None)
        peak_workers = max(peak_workers, billed)
        if t % 30 == 0:
            billed_curve[int(t)] = billed
        t += tick_minutes
    for worker in workers.values():
        bill_stop(worker, t)

    # The peers: the ideal capacity curve over the same ticks.
    ideal_minutes = strict_minutes = 0.0
    curve = []
    minute = float(min(b.booked for b in bookings))
    while minute <= horizon:
        held = [
            b.demand for b in bookings if max(b.booked, b.start - placement_lead) <= minute < b.end + teardown_minutes
        ]
        strict = [b.demand for b in bookings if max(b.booked, b.start - boot_lead) <= minute < b.end + teardown_minutes]
        ideal_now = ideal_workers(held, template)
        ideal_minutes += ideal_now * tick_minutes
        if minute in billed_curve and (ideal_now or billed_curve[minute]):
            curve.append((f"{int(minute) // 60:02d}:{int(minute) % 60:02d}", billed_curve[minute], ideal_now))
        strict_minutes += ideal_workers(strict, template) * tick_minutes
        minute += tick_minutes

    ahead = [s for s in sessions if s.booking.start - s.booking.booked >= placement_lead]
    on_time = [s for s in ahead if s.ready_at is not None and s.ready_at <= s.booking.start]
    walk_ins = [s for s in sessions if s.booking.start - s.booking.booked < placement_lead]
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
        "peak_workers": peak_workers,
        "decisions": {str(action): count for action, count in decisions.items()},
        "curve": curve,  # (time of day, workers billed, ideal workers) every 30 minutes
        "cost": round(worker_hours * template.cost_per_hour, 2),
        "ideal_cost": round(ideal_hours * template.cost_per_hour, 2),
    }


class Command(LcmCommand):
    help = "Replay a booking trace through the autoscaler on a simulated clock; on-time rate and worker-hours vs ideal."

    def add_arguments(self, parser):
        parser.add_argument(
            "--trace", help=f"Booking trace CSV (default {DEFAULT_TRACE.relative_to(settings.BASE_DIR)})."
        )
        parser.add_argument("--generate", metavar="FILE", help="Write a synthetic day trace to FILE and replay it.")
        parser.add_argument("--sessions", type=int, default=400, help="Bookings of a generated trace.")
        parser.add_argument("--seed", type=int, default=7, help="Seed of a generated trace.")
        parser.add_argument(
            "--template",
            help="Worker template (name) of the fleet (default: what the autoscaler launches for the largest booking).",
        )
        parser.add_argument("--placement-lead", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--boot-lead", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--scale-up-cooldown", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--scale-down-cooldown", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--max-workers", type=int, default=1000, help="Per region (default 1000: uncapped).")
        parser.add_argument("--instantiate-minutes", type=float, default=2.0)
        parser.add_argument("--teardown-minutes", type=float, default=1.0)
        parser.add_argument("--stop-minutes", type=float, default=2.0)
        parser.add_argument("--tick-seconds", type=float, default=60.0)
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        from workers.models import SystemSettings

        if options["sessions"] < 1 or options["tick_seconds"] <= 0 or options["max_workers"] < 1:
            raise fail("--sessions and --max-workers must be at least 1 and --tick-seconds positive")
        if options["generate"]:
            try:
                generate_trace(options["generate"], sessions=options["sessions"], seed=options["seed"])
            except OSError as exc:
                raise fail(f"cannot write {options['generate']}: {exc.strerror}") from None
            path = options["generate"]
        else:
            path = options["trace"] or DEFAULT_TRACE
        try:
            bookings = read_trace(path)
        except OSError as exc:
            raise fail(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise fail(f"{path}: {exc}") from None
        try:
            template = choose_template(bookings, _templates(), options["template"])
        except ValueError as exc:
            raise fail(exc) from None
        system = SystemSettings.objects.filter(pk=1).first() or SystemSettings()  # read only: defaults if unset

        def minutes(option, default):
            value = options[option]
            return default if value is None else value

        policy = Policy(
            autoscaling_enabled=True,
            min_workers=0,
            max_workers=options["max_workers"],
            scale_up_cooldown=timedelta(minutes=minutes("scale_up_cooldown", system.scale_up_cooldown_minutes)),
            scale_down_cooldown=timedelta(minutes=minutes("scale_down_cooldown", system.scale_down_cooldown_minutes)),
            idle_detection_enabled=False,
        )
        figures = replay(
            bookings,
            template,
            policy,
            placement_lead=minutes("placement_lead", system.placement_lead_minutes),
            boot_lead=minutes("boot_lead", system.boot_lead_minutes),
            instantiate_minutes=options["instantiate_minutes"],
            teardown_minutes=options["teardown_minutes"],
            stop_minutes=options["stop_minutes"],
            tick_minutes=options["tick_seconds"] / 60,
        )
        shown = Path(path).resolve()
        if shown.is_relative_to(Path(settings.BASE_DIR)):
            shown = shown.relative_to(Path(settings.BASE_DIR))
        figures = {"trace": str(shown), "template": template.name, **figures}
        figures["targets_met"] = figures["on_time_percent"] == 100.0 and (figures["ratio"] or 0) <= TARGET_RATIO
        if options["json"]:
            self.stdout.write(json.dumps(figures, indent=2))
            return
        f = figures
        self.stdout.write(f"trace {f['trace']}: {f['sessions']} sessions, template {f['template']}")
        self.stdout.write(
            f"booked >= placement lead ahead: {f['booked_ahead_ready_on_time']}/{f['booked_ahead']} READY before their "
            f"start ({f['on_time_percent']}%, target 100%)"
        )
        self.stdout.write(
            f"walk-ins (booked later): {f['walk_ins_ready_on_time']}/{f['walk_ins']} ready on time; "
            f"{f['expired']} expired unplaced"
        )
        self.stdout.write(
            f"worker-hours {f['worker_hours']} vs ideal capacity curve {f['ideal_worker_hours']} (peer): "
            f"ratio {f['ratio']} (target <= {TARGET_RATIO})"
        )
        self.stdout.write(
            f"strict ideal (capacity only from start - boot lead): {f['strict_ideal_worker_hours']} worker-hours"
        )
        self.stdout.write(
            f"workers launched {f['workers_launched']}, peak {f['peak_workers']}; decisions {f['decisions']}; "
            f"cost ${f['cost']} vs ideal ${f['ideal_cost']}"
        )
        self.stdout.write("targets met" if f["targets_met"] else "TARGETS MISSED")


def _templates() -> list[TemplateOption]:
    """The enabled worker templates: from the database, else from the templates file."""
    from workers.autoscaling import template_option
    from workers.models import WorkerTemplate
    from workers.services import load_template_file

    stored = [template_option(t) for t in WorkerTemplate.objects.filter(enabled=True)]
    if stored:
        return stored
    return [
        TemplateOption(
            id=entry["name"],
            name=entry["name"],
            region=entry["region"],
            license_type=entry["license_type"],
            cpu_cores=entry["cpu_cores"],
            memory_gb=entry["memory_gb"],
            storage_gb=entry["storage_gb"],
            max_nodes=entry["max_nodes"],
            ports=entry["port_range_end"] - entry["port_range_start"] + 1,
            startup_minutes=entry["startup_minutes"],
            cost_per_hour=float(entry["cost_per_hour"]),
            cml_version=ami_version_hint(entry["ami_name_pattern"]),
        )
        for entry in load_template_file()
        if entry["enabled"]
    ]


def choose_template(bookings: list[Booking], templates: list[TemplateOption], name: str | None) -> TemplateOption:
    """The template named, or else the one the autoscaler itself launches for the trace's largest booking."""
    if name:
        for template in templates:
            if template.name == name:
                return template
        raise ValueError(f"no enabled worker template named {name!r}")
    largest = max(bookings, key=lambda b: (b.demand.cpu_cores, b.demand.memory_gb, b.demand.storage_gb))
    pending = [PendingSession("largest", largest.demand, _at(largest.start))]
    for decision in plan(_at(largest.booked), pending, [], templates, Policy()):
        if decision.action == A.LAUNCH:
            return next(t for t in templates if t.id == decision.template_id)
    raise ValueError("no enabled worker template fits the trace's largest booking")
