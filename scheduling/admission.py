"""Admission: can the fleet hold `count` more sessions of a definition over a timeslot? (SPEC §10 capacity check)

`capacity_check` answers with a `Verdict` naming numbers. Demand is the new sessions plus what is already
booked over the same window: every PENDING or capacity-holding session whose occupancy overlaps it, a
session occupying its worker from `timeslot_start − boot lead` (its definition's, else the global one) to
`timeslot_end + TEARDOWN_ALLOWANCE` (a session holding capacity now holds it at least until now + the
allowance). The fleet is every worker that is running or on its way to RUNNING (desired RUNNING), plus the
workers LCM itself drained or paused (the autoscaler revives those on demand), plus, when autoscaling is
on, the room up to `max_workers_per_region` filled with the default worker template (else the cheapest
enabled template that can take the definition). A worker an admin is draining or stopping is not counted.

The sessions are packed onto that fleet at each instant of the window where the demand peaks (right
before some session leaves), with placement's own rule (`scheduling.capacity.fit_reason`) and best fit:
sessions already on a worker stay there, the PENDING ones already booked go first (largest first), then
the new ones. It fits when every new session finds a place at every such instant. The numbers reported
are those of the worst instant, over the workers that can take the definition: `cpu`, `memory_gb`,
`storage_gb`, `nodes` (as the fit rule counts them) and `sessions` (how many sessions those workers hold;
licence limits such as PERSONAL's one session per worker, ports and packing show up there).

Booking serializes admission with `admission_lock()` (a transaction-scoped PostgreSQL advisory lock;
SQLite's IMMEDIATE transactions are serialized already), so two bookings into the last capacity cannot
both pass the check.
"""

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Max, Q
from django.utils import timezone

from lcm.errors import Conflict
from lcm.versions import ami_version_hint
from scheduling.capacity import Demand, WorkerCapacity, fit_reason
from scheduling.placement import fill
from scheduling.selectors import worker_totals
from sessions.models import LabletDefinition, LabletSession
from sessions.states import SessionStatus, capacity_holding_q
from workers.models import CMLWorker, SystemSettings, WorkerTemplate
from workers.selectors import LCM_STOPPERS, stopped_by
from workers.states import COMING, DesiredStatus, WorkerStatus

W = WorkerStatus
S = SessionStatus

# How long after its timeslot a session's lab still holds its worker: stop, release, wipe.
TEARDOWN_ALLOWANCE = timedelta(minutes=10)
DIMENSIONS = ("cpu", "memory_gb", "storage_gb", "nodes", "sessions")
LABELS = {"cpu": "CPU", "memory_gb": "GB memory", "storage_gb": "GB storage", "nodes": "nodes", "sessions": "sessions"}
ADMISSION_MODES = ("refuse", "warn", "off")
# Any 64-bit number that names "admission" among the advisory locks; only LCM takes it.
_ADVISORY_KEY = 0x4C434D_0A0D


@dataclass(frozen=True)
class Verdict:
    """The capacity check's answer: does it fit, and the numbers (at `at`, the worst instant) behind it."""

    fits: bool
    needed: dict
    available: dict
    shortfall: dict
    reasons: list[str] = field(default_factory=list)
    at: datetime | None = None

    def as_dict(self) -> dict:
        return {
            "fits": self.fits,
            "needed": dict(self.needed),
            "available": dict(self.available),
            "shortfall": dict(self.shortfall),
            "reasons": list(self.reasons),
            "at": self.at,
        }


class CapacityRefused(Conflict):
    """Admission `refuse` and the fleet cannot hold the booking (HTTP 409 with the verdict under `capacity`)."""

    code = "capacity"

    def __init__(self, verdict: Verdict):
        self.verdict = verdict
        super().__init__("the fleet cannot hold this booking: " + "; ".join(verdict.reasons), field="capacity")
        self.extra = {"capacity": {k: v for k, v in verdict.as_dict().items() if k in _BODY_KEYS}}


_BODY_KEYS = ("fits", "needed", "available", "shortfall", "reasons")


def admission_lock() -> None:
    """Serialize admission until the current transaction ends (call inside `transaction.atomic`)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_KEY])
    # SQLite: LCM opens every transaction IMMEDIATE (lcm.settings), which takes the database's write lock.


def admission_mode(on_capacity: str | None) -> str:
    """`on_capacity` when given (refuse | warn | off), else `SystemSettings.admission`."""
    mode = (on_capacity or SystemSettings.load().admission or "refuse").strip().lower()
    return mode if mode in ADMISSION_MODES else "refuse"


# --- the fleet -------------------------------------------------------------------------------


@dataclass
class _Fleet:
    capacities: dict  # worker id -> WorkerCapacity, empty but for the ports its labs keep
    autoscale: str  # what autoscaling adds, for the reasons
    rejections: list  # (worker name, why it cannot take the definition)


def _fleet(definition, demand: Demand, system) -> _Fleet:
    rows = list(
        CMLWorker.objects.exclude(status=W.TERMINATED).values(
            "id", "name", "status", "desired_status", "region", "template__ami_name_pattern"
        )
    )
    stoppable = [r["id"] for r in rows if r["status"] in (W.DRAINING, W.STOPPING, W.STOPPED)]
    stoppers = stopped_by(stoppable) if stoppable else {}
    counted, active = [], Counter()
    for row in rows:
        wanted = row["desired_status"] == DesiredStatus.RUNNING
        serving = wanted and (row["status"] in (W.RUNNING, *COMING) or row["status"] in (W.STOPPING, W.STOPPED))
        revivable = row["status"] in (W.DRAINING, W.STOPPING, W.STOPPED) and stoppers.get(str(row["id"])) in (
            LCM_STOPPERS
        )
        if wanted and row["status"] in (W.RUNNING, W.DRAINING, *COMING):
            active[row["region"]] += 1
        if serving or (revivable and row["desired_status"] != DesiredStatus.TERMINATED):
            counted.append(row)
            if not (wanted and row["status"] in (W.RUNNING, W.DRAINING, *COMING)):
                active[row["region"]] += 1  # started again, it takes a place under the region's maximum
    known = worker_totals([r["id"] for r in counted]) if counted else {}
    capacities, rejections = {}, []
    for row in counted:
        cap = known[str(row["id"])]
        version = cap.cml_version or ami_version_hint(row["template__ami_name_pattern"])
        empty = replace(cap, status=W.RUNNING, cml_version=version)
        capacities[empty.worker_id] = empty
        why = _why_not(empty, definition, demand)
        if why:
            rejections.append((row["name"], why))
    autoscale = _autoscaler_room(definition, demand, system, active, capacities)
    return _Fleet(capacities, autoscale, rejections)


def _why_not(capacity: WorkerCapacity, definition, demand: Demand) -> str | None:
    return fit_reason(
        capacity, demand, cml_version_min=definition.cml_version_min, cml_version_max=definition.cml_version_max
    )


def _autoscaler_room(definition, demand, system, active: Counter, capacities: dict) -> str:
    """Add the workers autoscaling may still launch to `capacities`; returns what to say about it."""
    if not system.autoscaling_enabled:
        return "autoscaling is off"
    template = system.default_worker_template
    if template is None or not template.enabled:
        options = [(t, _template_capacity(t, 0)) for t in WorkerTemplate.objects.filter(enabled=True)]
        fitting = [t for t, cap in options if _why_not(cap, definition, demand) is None]
        if not fitting:
            return f"autoscaling is on but no enabled worker template can take {definition}"
        template = min(fitting, key=lambda t: (t.cost_per_hour, t.name))
    elif (problem := _why_not(_template_capacity(template, 0), definition, demand)) is not None:
        return f"autoscaling is on but its default template {template.name} cannot take {definition}: {problem}"
    maximum = system.max_workers_per_region
    room = max(0, maximum - active[template.region])
    if room == 0:
        return f"autoscaling is on but {template.region} is at its maximum of {maximum} workers"
    for index in range(room):
        cap = _template_capacity(template, index)
        capacities[cap.worker_id] = cap
    return f"counting autoscaling: up to {room} more {template.name} worker(s) in {template.region} (max {maximum})"


def _template_capacity(template, index: int) -> WorkerCapacity:
    return WorkerCapacity(
        worker_id=f"new:{template.name}:{index}",
        name=f"new {template.name} #{index + 1}",
        status=W.RUNNING,
        license_type=template.license_type,
        cml_version=ami_version_hint(template.ami_name_pattern),
        cpu_total=template.cpu_cores,
        memory_total=template.memory_gb,
        storage_total=template.storage_gb,
        nodes_total=template.max_nodes,
        ports_total=template.port_range_end - template.port_range_start + 1,
    )


# --- the demand ------------------------------------------------------------------------------


# One booked session as the check sees it: ((definition id, worker id while it holds capacity there, has a lab),
# from, until) — when it occupies a worker. Plain tuples: thousands are made per check.
_Booked = tuple


def _lead(definition, system) -> timedelta:
    minutes = definition.boot_lead_minutes if definition.boot_lead_minutes is not None else system.boot_lead_minutes
    return timedelta(minutes=minutes)


def occupancy(definition, system, status, worker_id, start, stop, now) -> tuple[datetime, datetime] | None:
    """When a booked session occupies a worker (the demand model of the check and of the forecast, SPEC §10):
    from its start − boot lead to its end + `TEARDOWN_ALLOWANCE`; one holding capacity now holds it at least
    until now + the allowance; None when it ended before placement (it holds nothing)."""
    begins, ends = start - _lead(definition, system), stop + TEARDOWN_ALLOWANCE
    if status != S.PENDING:
        if worker_id is None:
            return None
        begins, ends = min(begins, now), max(ends, now + TEARDOWN_ALLOWANCE)
    return begins, ends


def booked_sessions_q(begin: datetime, upper: datetime) -> Q:
    """The sessions that may occupy a worker between `begin` and `upper` (their start before `upper`): PENDING
    ones not ended by then, and every one holding capacity."""
    pending_or_holding = Q(status=S.PENDING) | capacity_holding_q()
    return (
        pending_or_holding
        & Q(timeslot_start__lt=upper)
        & (Q(timeslot_end__gt=begin - TEARDOWN_ALLOWANCE) | ~Q(status=S.PENDING))
    )


def _booked(window: tuple, system, now) -> tuple[list[_Booked], dict]:
    """The sessions occupying a worker at some instant of `window`, and their definitions by id (three queries)."""
    begin, end = window
    longest = LabletDefinition.objects.aggregate(m=Max("boot_lead_minutes"))["m"] or 0
    upper = end + timedelta(minutes=max(longest, system.boot_lead_minutes))
    rows = list(
        LabletSession.objects.filter(booked_sessions_q(begin, upper)).values_list(
            "definition_id", "worker_id", "lab_record_id", "status", "timeslot_start", "timeslot_end"
        )
    )
    definitions = LabletDefinition.objects.in_bulk({r[0] for r in rows})
    booked = []
    for definition_id, worker_id, lab_id, status, start, stop in rows:
        held = occupancy(definitions[definition_id], system, status, worker_id, start, stop, now)
        if held is None:
            continue
        begins, ends = held
        if begins < end and ends > begin:
            booked.append(((definition_id, str(worker_id) if worker_id else None, bool(lab_id)), begins, ends))
    return booked, definitions


def _peaks(window: tuple, booked: list[_Booked]) -> list[tuple[datetime, Counter]]:
    """The instants where the demand may peak, each with the booked sessions there counted by (definition, worker,
    has lab): a sweep over arrivals and departures, keeping each instant some session arrives at, less those
    whose sessions another kept instant holds too (it can be no harder to pack)."""
    begin, end = window
    events = []
    for key, begins, ends in booked:
        events.append((max(begins, begin), 1, key))
        events.append((ends, 0, key))
    events.sort(key=lambda e: (e[0], e[1]))
    here: Counter = Counter()
    snapshots = [(begin, Counter())]
    for index, (at, arriving, key) in enumerate(events):
        here[key] += 1 if arriving else -1
        last_at_time = index + 1 == len(events) or events[index + 1][0] != at
        if arriving and last_at_time and at < end:
            snapshots.append((at, +here))
    kept: list[tuple[datetime, Counter]] = []
    for at, counts in sorted(snapshots, key=lambda s: -s[1].total()):
        if not any(all(counts[k] <= other[k] for k in counts) for _, other in kept):
            kept.append((at, counts))
    return kept


# --- packing ---------------------------------------------------------------------------------


def _how_many(capacity: WorkerCapacity, demand: Demand, versions: tuple, wanted: int) -> int:
    """How many more sessions of `demand` (1 … wanted) fit on `capacity` by the fit rule (it fits one)."""
    low, high = 1, wanted
    while low < high:
        middle = (low + high + 1) // 2
        if fit_reason(capacity.claimed(demand, count=middle - 1), demand, cml_version_min=versions[0],
                      cml_version_max=versions[1]) is None:  # fmt: skip
            low = middle
        else:
            high = middle - 1
    return low


def _place(capacities: dict, demand: Demand, versions: tuple, count: int) -> int:
    """Place `count` sessions of `demand` best fit (fullest fitting worker first, filled before the next: placing
    on one worker changes no other's rank); returns how many found no place."""
    fitting = [
        c
        for c in capacities.values()
        if fit_reason(c, demand, cml_version_min=versions[0], cml_version_max=versions[1]) is None
    ]
    for best in sorted(fitting, key=lambda c: (-fill(c), -c.cpu_total, c.worker_id)):
        if count == 0:
            break
        placed = _how_many(best, demand, versions, count)
        capacities[best.worker_id] = best.claimed(demand, count=placed)
        count -= placed
    return count


@dataclass
class _Instant:
    at: datetime
    capacities: dict
    unplaced_new: int
    unplaced_booked: int


def _pack(at, here: Counter, fleet: _Fleet, definitions, definition, count) -> _Instant:
    capacities = dict(fleet.capacities)
    waiting = []
    for (definition_id, worker_id, has_lab), n in here.items():
        demand = Demand.of(definitions[definition_id])
        if worker_id is None:
            waiting.append((definitions[definition_id], demand, n))
        elif worker_id in capacities:
            capacities[worker_id] = capacities[worker_id].claimed(demand, reuse=has_lab, count=n)
    unplaced_booked = 0
    for other, demand, n in sorted(waiting, key=lambda w: (-w[1].cpu_cores, -w[1].memory_gb, -w[1].node_count)):
        unplaced_booked += _place(capacities, demand, (other.cml_version_min, other.cml_version_max), n)
    versions = (definition.cml_version_min, definition.cml_version_max)
    unplaced_new = _place(capacities, Demand.of(definition), versions, count)
    return _Instant(at, capacities, unplaced_new, unplaced_booked)


# --- the check -------------------------------------------------------------------------------


def capacity_check(definition, timeslot_start, timeslot_end, count: int, *, now=None) -> Verdict:
    """Can the fleet hold `count` more sessions of `definition` over [timeslot_start, timeslot_end]? (SPEC §10)

    A handful of queries whatever the number of sessions booked; see the module docstring for the rule.
    """
    now = now or timezone.now()
    system = SystemSettings.load()
    demand = Demand.of(definition)
    window = (timeslot_start - _lead(definition, system), timeslot_end + TEARDOWN_ALLOWANCE)
    fleet = _fleet(definition, demand, system)
    booked, definitions = _booked(window, system, now)
    packed = [_pack(at, here, fleet, definitions, definition, count) for at, here in _peaks(window, booked)]
    eligible = [wid for wid, cap in fleet.capacities.items() if _why_not(cap, definition, demand) is None]
    worst = max(packed, key=lambda p: (p.unplaced_new, _load(p, eligible, demand)["cpu"], p.at))
    needed = _load(worst, eligible, demand)
    available = _room(worst, eligible, definition, demand)
    available["sessions"] += needed["sessions"] - worst.unplaced_new
    shortfall = {k: needed[k] - available[k] for k in DIMENSIONS if needed[k] > available[k]}
    fits = all(p.unplaced_new == 0 for p in packed)
    reasons = _reasons(fits, worst, needed, available, shortfall, fleet, definition, count, now)
    return Verdict(fits, needed, available, shortfall, reasons, worst.at)


def _load(instant: _Instant, eligible: list, demand: Demand) -> dict:
    """What the sessions on the workers that can take the definition use at that instant, the new ones that
    found no place included."""
    caps = [instant.capacities[w] for w in eligible]
    extra = instant.unplaced_new
    return {
        "cpu": sum(c.cpu_used for c in caps) + extra * demand.cpu_cores,
        "memory_gb": sum(c.memory_used for c in caps) + extra * demand.memory_gb,
        "storage_gb": sum(c.storage_used for c in caps) + extra * demand.storage_gb,
        "nodes": sum(c.nodes_used for c in caps) + extra * demand.node_count,
        "sessions": sum(c.sessions for c in caps) + extra,
    }


_PROBE = 100_000


def _room(instant: _Instant, eligible: list, definition, demand: Demand) -> dict:
    """The totals of the workers that can take the definition; `sessions` is how many more would still fit."""
    caps = [instant.capacities[w] for w in eligible]
    more = 0
    if instant.unplaced_new == 0 and caps:
        trial = {c.worker_id: c for c in caps}
        more = _PROBE - _place(trial, demand, (definition.cml_version_min, definition.cml_version_max), _PROBE)
    return {
        "cpu": sum(c.cpu_total for c in caps),
        "memory_gb": sum(c.memory_total for c in caps),
        "storage_gb": sum(c.storage_total for c in caps),
        "nodes": sum(c.nodes_total for c in caps),
        "sessions": more,
    }


def _when(at: datetime, now: datetime) -> str:
    return f"{at:%H:%M} UTC" if at.date() == now.date() else f"{at:%Y-%m-%d %H:%M} UTC"


def _reasons(fits, worst, needed, available, shortfall, fleet, definition, count, now) -> list[str]:
    """Human numbers: "needs 120 CPU at 09:00 UTC; the fleet has 52; autoscaling is off"."""
    when = _when(max(worst.at, now), now)
    if fits:
        line = (
            f"fits: at the peak ({when}) the sessions need {needed['cpu']} of {available['cpu']} CPU, "
            f"{needed['memory_gb']} of {available['memory_gb']} GB memory and {needed['nodes']} of "
            f"{available['nodes']} nodes; room for {available['sessions']} more session(s); {fleet.autoscale}"
        )
        return [line]
    reasons = []
    if available["cpu"] == 0:  # no worker (counted or launchable) can take it at all
        named = "; ".join(f"{name}: {why}" for name, why in fleet.rejections[:3]) or "there are no workers"
        reasons.append(f"no worker can take {definition} ({named}); {fleet.autoscale}")
    for key in ("cpu", "memory_gb", "storage_gb", "nodes"):
        if key in shortfall:
            reasons.append(
                f"needs {needed[key]} {LABELS[key]} at {when}; the fleet has {available[key]}; {fleet.autoscale}"
            )
    reasons.append(
        f"{worst.unplaced_new} of the {count} new session(s) fit no worker at {when} "
        f"({needed['sessions'] - worst.unplaced_new} session(s) already fill the workers that can take it); "
        f"{fleet.autoscale}"
    )
    if worst.unplaced_booked:
        reasons.append(f"{worst.unplaced_booked} session(s) already booked over this window fit no worker either")
    return reasons
