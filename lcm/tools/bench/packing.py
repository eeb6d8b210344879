"""What the scheduling benchmarks share in memory (SPEC §6.3): the fleet and session mixes, the lower bound,
the peer policies, and runs of them (all at once, or a timeline of arrivals and departures).

Plain data and pure functions; the database and etcd side is in `lcm.tools.bench.fixtures`.
"""

import bisect
import heapq
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from scheduling.capacity import Demand, WorkerCapacity
from scheduling.placement import Fleet

# Worker shapes of the ENTERPRISE templates in workers/templates.yaml (cpu, memory GB, storage GB,
# nodes) and their share of the benchmark fleet. Fixed here so that figures stay comparable when
# the seeded templates are edited.
FLEET_MIX: tuple[tuple[str, tuple[int, int, int, int], float], ...] = (
    ("cml-small", (8, 32, 200, 20), 0.2),
    ("cml-medium", (16, 64, 400, 60), 0.4),
    ("cml-large", (96, 384, 1000, 250), 0.4),
)
# Lab shapes booked (cpu, memory GB, storage GB, nodes, ports) and their share of the sessions.
SESSION_MIX: tuple[tuple[str, Demand, float], ...] = (
    ("lab-small", Demand(1, 2, 5, 2, 2), 0.50),
    ("lab-medium", Demand(2, 4, 10, 3, 3), 0.35),
    ("lab-large", Demand(4, 8, 20, 6, 6), 0.15),
)
# Session lengths in minutes, drawn uniformly (the definitions' usual maximum durations).
DURATIONS = (30, 45, 60, 90, 120, 180, 240)
DIMENSIONS = ("cpu", "memory", "storage", "nodes")
PORTS_PER_WORKER = 8000  # the default range 2000-9999


def fleet_shapes(workers: int, seed: int = 1) -> list[str]:
    """The template name of each of `workers` workers, in the FLEET_MIX shares, shuffled."""
    names: list[str] = []
    for index, (name, _, share) in enumerate(FLEET_MIX):
        count = workers - len(names) if index == len(FLEET_MIX) - 1 else round(workers * share)
        names += [name] * max(0, count)
    random.Random(seed).shuffle(names)
    return names[:workers]


def fleet_capacities(workers: int, seed: int = 1) -> list[WorkerCapacity]:
    """An empty heterogeneous fleet as plain capacities (ids sort in creation order)."""
    shapes = {name: shape for name, shape, _ in FLEET_MIX}
    return [
        WorkerCapacity(
            worker_id=f"{index:08d}-0000-4000-8000-000000000000",
            name=f"bench-{name}-{index}",
            status="RUNNING",
            license_type="ENTERPRISE",
            cml_version="2.9.0",
            cpu_total=shapes[name][0],
            memory_total=shapes[name][1],
            storage_total=shapes[name][2],
            nodes_total=shapes[name][3],
            ports_total=PORTS_PER_WORKER,
        )
        for index, name in enumerate(fleet_shapes(workers, seed))
    ]


def session_kinds(sessions: int, seed: int = 1) -> list[str]:
    """The lab shape of each session, drawn in the SESSION_MIX shares."""
    rng = random.Random(seed)
    names = [name for name, _, _ in SESSION_MIX]
    return rng.choices(names, weights=[share for _, _, share in SESSION_MIX], k=sessions)


DEMANDS = {name: demand for name, demand, _ in SESSION_MIX}


def _vector(demand: Demand) -> tuple[int, int, int, int]:
    return demand.cpu_cores, demand.memory_gb, demand.storage_gb, demand.node_count


def _totals(capacity: WorkerCapacity) -> tuple[int, int, int, int]:
    return capacity.cpu_total, capacity.memory_total, capacity.storage_total, capacity.nodes_total


class LowerBound:
    """Fewest workers of this fleet that could hold a demand, per dimension (its summed demand over the
    largest capacities first); the bound is the largest of the four. No placement can use fewer."""

    def __init__(self, capacities: Sequence[WorkerCapacity]):
        self._prefix = [
            list(itertools.accumulate(sorted((_totals(c)[i] for c in capacities), reverse=True)))
            for i in range(len(DIMENSIONS))
        ]

    def per_dimension(self, demand: Sequence[int]) -> dict[str, int]:
        # The first k whose k largest capacities sum to the need (k = fleet size + 1 when even all fall short).
        return {
            name: bisect.bisect_left(prefix, need) + 1 if need > 0 else 0
            for name, prefix, need in zip(DIMENSIONS, self._prefix, demand, strict=True)
        }

    def __call__(self, demand: Sequence[int]) -> int:
        return max(self.per_dimension(demand).values(), default=0)


# --- policies: the Fleet (what the scheduler runs) and the peers ------------------------------


class Policy:
    """A placement policy under test: `choose` a worker for a demand, keep the books with claim/release."""

    name = ""

    def choose(self, demand: Demand) -> str | None:
        raise NotImplementedError

    def claim(self, worker_id: str, demand: Demand) -> None:
        raise NotImplementedError

    def release(self, worker_id: str, demand: Demand) -> None:
        raise NotImplementedError


class BestFit(Policy):
    """LCM's placement: `scheduling.placement.Fleet`, exactly as the scheduler tick uses it."""

    name = "best fit (LCM)"

    def __init__(self, capacities: Sequence[WorkerCapacity]):
        self.fleet = Fleet(capacities)

    def choose(self, demand: Demand) -> str | None:
        chosen = self.fleet.choose(demand)
        return chosen.worker_id if chosen else None

    def claim(self, worker_id: str, demand: Demand) -> None:
        self.fleet.claim(worker_id, demand)

    def release(self, worker_id: str, demand: Demand) -> None:
        self.fleet.release(worker_id, demand)


class Scan(Policy):
    """A peer that looks at every worker for each session (the fleet has no licence or version limits, so a
    peer checks room only: CPU, memory, storage, nodes, ports)."""

    def __init__(self, capacities: Sequence[WorkerCapacity]):
        self.ids = [c.worker_id for c in sorted(capacities, key=lambda c: c.worker_id)]
        by_id = {c.worker_id: c for c in capacities}
        self.total = [(*_totals(by_id[w]), by_id[w].ports_total) for w in self.ids]
        self.used = [[0, 0, 0, 0, 0] for _ in self.ids]
        self.index = {w: i for i, w in enumerate(self.ids)}

    def _fits(self, i: int, need: tuple) -> bool:
        used, total = self.used[i], self.total[i]
        return all(u + n <= t for u, n, t in zip(used, need, total, strict=True))

    def claim(self, worker_id: str, demand: Demand, sign: int = 1) -> None:
        used = self.used[self.index[worker_id]]
        for k, n in enumerate((*_vector(demand), demand.ports)):
            used[k] += sign * n

    def release(self, worker_id: str, demand: Demand) -> None:
        self.claim(worker_id, demand, -1)

    def _fill(self, i: int, extra: tuple = (0, 0, 0, 0)) -> float:
        used, total = self.used[i], self.total[i]
        return sum((used[k] + extra[k]) / total[k] for k in range(4)) / 4


class FirstFit(Scan):
    """Naive first fit: the first worker (in id order) with room."""

    name = "first fit (peer)"

    def choose(self, demand: Demand) -> str | None:
        need = (*_vector(demand), demand.ports)
        for i in range(len(self.ids)):
            if self._fits(i, need):
                return self.ids[i]
        return None


class Spread(Scan):
    """Spreading: the least-loaded worker with room (what a load balancer would do)."""

    name = "spreading (peer)"

    def choose(self, demand: Demand) -> str | None:
        need = (*_vector(demand), demand.ports)
        best, best_fill = None, None
        for i in range(len(self.ids)):
            if self._fits(i, need):
                fill = self._fill(i)
                if best_fill is None or fill < best_fill:
                    best, best_fill = i, fill
        return None if best is None else self.ids[best]


class FullestAfter(Scan):
    """The previous LCM score, kept as a peer: the worker fullest *after* placing wins."""

    name = "fullest-after-placing (old score)"

    def choose(self, demand: Demand) -> str | None:
        need = (*_vector(demand), demand.ports)
        best, best_fill = None, None
        for i in range(len(self.ids)):
            if self._fits(i, need):
                fill = self._fill(i, need)
                if best_fill is None or fill > best_fill:
                    best, best_fill = i, fill
        return None if best is None else self.ids[best]


PEERS: tuple[type[Scan], ...] = (FirstFit, Spread, FullestAfter)


# --- runs ----------------------------------------------------------------------------------


@dataclass
class BatchRun:
    """All sessions placed at once, in order, with nothing leaving."""

    policy: str
    decisions: int
    placed: int
    seconds: float
    workers_used: int
    lower_bound: int
    bound_by_dimension: dict[str, int]

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds if self.seconds else 0.0

    @property
    def ratio(self) -> float:
        return self.workers_used / self.lower_bound if self.lower_bound else 0.0


def run_batch(policy: Policy, demands: Sequence[Demand], bound: LowerBound) -> BatchRun:
    """Decide every demand in order (claiming as it goes) and time the decisions."""
    chosen: list[str | None] = []
    started = time.perf_counter()
    for demand in demands:
        worker_id = policy.choose(demand)
        if worker_id is not None:
            policy.claim(worker_id, demand)
        chosen.append(worker_id)
    seconds = time.perf_counter() - started
    total = [0, 0, 0, 0]
    for demand, worker_id in zip(demands, chosen, strict=True):
        if worker_id is not None:
            for k, n in enumerate(_vector(demand)):
                total[k] += n
    return BatchRun(
        policy=policy.name,
        decisions=len(demands),
        placed=sum(1 for w in chosen if w is not None),
        seconds=seconds,
        workers_used=len({w for w in chosen if w is not None}),
        lower_bound=bound(total),
        bound_by_dimension=bound.per_dimension(total),
    )


@dataclass(frozen=True)
class Booking:
    """One session of the timeline: arrives at `start` (minutes), stays `minutes`."""

    start: float
    minutes: int
    demand: Demand


def timeline(sessions: int, hours: float, seed: int = 1) -> list[Booking]:
    """`sessions` bookings arriving at random over `hours`, of mixed shapes and lengths, by arrival."""
    rng = random.Random(seed)
    kinds = session_kinds(sessions, seed)
    return sorted(
        (Booking(rng.uniform(0, hours * 60), rng.choice(DURATIONS), DEMANDS[kind]) for kind in kinds),
        key=lambda b: b.start,
    )


@dataclass
class TimelineRun:
    """Sessions arriving and leaving: workers in use against the lower bound over time."""

    policy: str
    decisions: int
    placed: int
    seconds: float
    peak_used: int = 0
    peak_bound: int = 0
    peak_bound_by_dimension: dict[str, int] = field(default_factory=dict)
    worker_minutes: float = 0.0
    bound_minutes: float = 0.0
    steady_worker_minutes: float = 0.0
    steady_bound_minutes: float = 0.0

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds if self.seconds else 0.0

    @property
    def peak_ratio(self) -> float:
        return self.peak_used / self.peak_bound if self.peak_bound else 0.0

    @property
    def hours_ratio(self) -> float:
        return self.worker_minutes / self.bound_minutes if self.bound_minutes else 0.0

    @property
    def steady_ratio(self) -> float:
        return self.steady_worker_minutes / self.steady_bound_minutes if self.steady_bound_minutes else 0.0


def run_timeline(policy: Policy, bookings: Sequence[Booking], bound: LowerBound) -> TimelineRun:
    """Replay arrivals (a placement each) and departures (capacity freed) in time order.

    Tracks the workers holding at least one session and the lower bound of the demand present,
    both piecewise constant between events: their peaks, their integrals over the whole run,
    and their integrals over the steady part (from the first departure to the last arrival,
    while sessions both arrive and leave).
    """
    run = TimelineRun(policy=policy.name, decisions=len(bookings), placed=0, seconds=0.0)
    steady = (min((b.start + b.minutes for b in bookings), default=0.0), max((b.start for b in bookings), default=0.0))
    events: list[tuple[float, int, int]] = [(b.start, 1, i) for i, b in enumerate(bookings)]
    heapq.heapify(events)
    held: dict[int, str] = {}
    sessions_on: dict[str, int] = {}
    demand = [0, 0, 0, 0]
    used = current_bound = 0
    last = 0.0
    while events:
        at, kind, index = heapq.heappop(events)
        _integrate(run, last, at, used, current_bound, steady)
        last = at
        booking = bookings[index]
        if kind == 0:  # departure
            worker_id = held.pop(index)
            policy.release(worker_id, booking.demand)
            sign = -1
        else:
            worker_id = _arrive(run, policy, booking)
            if worker_id is None:
                continue
            held[index] = worker_id
            heapq.heappush(events, (at + booking.minutes, 0, index))
            sign = 1
        sessions_on[worker_id] = sessions_on.get(worker_id, 0) + sign
        if sessions_on[worker_id] == (1 if sign == 1 else 0):
            used += sign
        for k, n in enumerate(_vector(booking.demand)):
            demand[k] += sign * n
        current_bound = bound(demand)
        run.peak_used = max(run.peak_used, used)
        if current_bound > run.peak_bound:
            run.peak_bound = current_bound
            run.peak_bound_by_dimension = bound.per_dimension(demand)
    return run


def _integrate(run: TimelineRun, last: float, at: float, used: int, bound: int, steady: tuple[float, float]) -> None:
    """Add the span `last`..`at`, during which `used` workers held sessions and the bound was `bound`."""
    span = at - last
    run.worker_minutes += used * span
    run.bound_minutes += bound * span
    overlap = min(at, steady[1]) - max(last, steady[0])
    if overlap > 0:
        run.steady_worker_minutes += used * overlap
        run.steady_bound_minutes += bound * overlap


def _arrive(run: TimelineRun, policy: Policy, booking: Booking) -> str | None:
    """Place one arriving booking (timed into `run.seconds`); the worker chosen, or None when none has room."""
    began = time.perf_counter()
    worker_id = policy.choose(booking.demand)
    if worker_id is not None:
        policy.claim(worker_id, booking.demand)
    run.seconds += time.perf_counter() - began
    if worker_id is not None:
        run.placed += 1
    return worker_id
