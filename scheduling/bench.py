"""What the scheduling benchmarks share (SPEC §6.3): the fleet and session mixes, the lower bound,
the peer policies, a timeline of arrivals and departures, percentiles and a throwaway etcd.

Everything here is plain data and pure functions except `start_etcd`, which runs the etcd
binary on free ports in a temporary directory and removes it afterwards.
"""

import bisect
import heapq
import itertools
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

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
    steady_from = min((b.start + b.minutes for b in bookings), default=0.0)
    steady_to = max((b.start for b in bookings), default=0.0)
    events: list[tuple[float, int, int]] = [(b.start, 1, i) for i, b in enumerate(bookings)]
    heapq.heapify(events)
    held: dict[int, str] = {}
    sessions_on: dict[str, int] = {}
    demand = [0, 0, 0, 0]
    used = current_bound = 0
    last = 0.0
    deciding = 0.0
    while events:
        at, kind, index = heapq.heappop(events)
        span = at - last
        run.worker_minutes += used * span
        run.bound_minutes += current_bound * span
        overlap = min(at, steady_to) - max(last, steady_from)
        if overlap > 0:
            run.steady_worker_minutes += used * overlap
            run.steady_bound_minutes += current_bound * overlap
        last = at
        booking = bookings[index]
        if kind == 0:  # departure
            worker_id = held.pop(index)
            policy.release(worker_id, booking.demand)
            sign = -1
            sessions_on[worker_id] -= 1
            if sessions_on[worker_id] == 0:
                used -= 1
        else:
            began = time.perf_counter()
            worker_id = policy.choose(booking.demand)
            if worker_id is not None:
                policy.claim(worker_id, booking.demand)
            deciding += time.perf_counter() - began
            if worker_id is None:
                continue
            run.placed += 1
            held[index] = worker_id
            heapq.heappush(events, (at + booking.minutes, 0, index))
            sign = 1
            sessions_on[worker_id] = sessions_on.get(worker_id, 0) + 1
            if sessions_on[worker_id] == 1:
                used += 1
        for k, n in enumerate(_vector(booking.demand)):
            demand[k] += sign * n
        current_bound = bound(demand)
        run.peak_used = max(run.peak_used, used)
        if current_bound > run.peak_bound:
            run.peak_bound = current_bound
            run.peak_bound_by_dimension = bound.per_dimension(demand)
    run.seconds = deciding
    return run


# --- small helpers -------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method); the only sample when there is one."""
    if not samples:
        return 0.0
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def etcd_binary() -> str | None:
    """The etcd server binary (Debian's etcd-server package installs /usr/bin/etcd), or None."""
    return shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)


@contextmanager
def start_etcd(ready: Callable[[str], bool], timeout: float = 15.0) -> Iterator[str]:
    """Run a single-member etcd on free loopback ports in a temporary directory; yields its client URL.

    `ready(url)` is polled until it is true; the process and its data directory are removed on exit.
    Raises FileNotFoundError when etcd is not installed, RuntimeError when it does not come up.
    """
    binary = etcd_binary()
    if binary is None:
        raise FileNotFoundError("etcd is not installed (Debian package etcd-server)")
    data_dir = tempfile.mkdtemp(prefix="lcm-bench-etcd-")
    client_port, peer_port = free_port(), free_port()
    url, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    process = subprocess.Popen(
        [binary, "--name", "bench", "--data-dir", data_dir, "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"bench={peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not start on {url}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)


# --- database fixtures: created by a benchmark, removed by it ------------------------------


@contextmanager
def listeners_off() -> Iterator[None]:
    """Detach the after-commit listeners of `lcm.events` (etcd projection, reconcile enqueueing)
    for the duration: benchmark rows must not wake the real loops or touch etcd."""
    from lcm.events import changes_committed, status_changed

    signals = (status_changed, changes_committed)
    saved = []
    for signal in signals:
        with signal.lock:
            saved.append(signal.receivers)
            signal.receivers = []
            signal.sender_receivers_cache.clear()
    try:
        yield
    finally:
        for signal, receivers in zip(signals, saved, strict=True):
            with signal.lock:
                signal.receivers = receivers
                signal.sender_receivers_cache.clear()


@contextmanager
def quiet_logs(name: str = "lcm", level: str = "WARNING") -> Iterator[None]:
    """Raise a logger to `level` for the duration (one INFO line per change would flood the output)."""
    import logging

    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def demo_lab_yaml() -> str:
    from django.conf import settings

    return (Path(settings.BASE_DIR) / "sessions" / "demo" / "demo-lab.yaml").read_text()


def seed_definitions(tag: str, *, actor: str, grading: bool = False) -> dict:
    """One ACTIVE definition per SESSION_MIX shape, named `bench-<tag>-<shape>`; `{shape: definition}`.

    Written directly (fixture data): the shapes' node and port counts need no lab YAML of their own.
    """
    from sessions.models import LabletDefinition

    lab_yaml = demo_lab_yaml()
    definitions = {}
    for name, demand, _ in SESSION_MIX:
        ports = [
            {"name": f"node{i}_serial", "protocol": "serial", "port": 7000 + i, "node_label": f"node{i}"}
            for i in range(demand.ports)
        ]
        definitions[name] = LabletDefinition.objects.create(
            name=f"bench-{tag}-{name}",
            version="1.0.0",
            lab_yaml=lab_yaml,
            lab_yaml_hash="0" * 64,
            cpu_cores=demand.cpu_cores,
            memory_gb=demand.memory_gb,
            storage_gb=demand.storage_gb,
            node_count=demand.node_count,
            port_template=ports,
            max_duration_minutes=max(DURATIONS),
            grading_enabled=grading,
            form_qualified_name="Bench-1.0" if grading else "",
            created_by=actor,
        )
    return definitions


def seed_workers(tag: str, capacities: Sequence[WorkerCapacity], *, actor: str, status: str = "RUNNING") -> list:
    """CMLWorkers named `bench-<tag>-<n>` with these capacities, bulk inserted; returns them."""
    from workers.models import CMLWorker

    return CMLWorker.objects.bulk_create(
        CMLWorker(
            name=f"bench-{tag}-{index}",
            status=status,
            license_type=capacity.license_type,
            cml_version=capacity.cml_version,
            cml_base_url=f"http://127.0.0.1:9/bench/{index}",
            cpu_cores=capacity.cpu_total,
            memory_gb=capacity.memory_total,
            storage_gb=capacity.storage_total,
            max_nodes=capacity.nodes_total,
            port_range_start=2000,
            port_range_end=2000 + capacity.ports_total - 1,
            created_by=actor,
        )
        for index, capacity in enumerate(capacities)
    )


def seed_sessions(tag: str, rows: Sequence[dict], *, actor: str, batch: int = 2000) -> list:
    """Bulk insert sessions (each dict: definition, timeslot_start, timeslot_end, and any other field) with
    their "booked" history row, as `session_create` leaves them; returns their ids in order."""
    from sessions.models import LabletSession, SessionStatusChange

    ids = []
    for offset in range(0, len(rows), batch):
        chunk = []
        for index, row in enumerate(rows[offset : offset + batch], start=offset):
            fields = {"status": "PENDING", "owner": f"bench-{tag}-{index}", "created_by": actor} | dict(row)
            fields.setdefault("definition_version", fields["definition"].version)
            fields.setdefault("status_changed_at", fields["timeslot_start"])
            chunk.append(LabletSession(**fields))
        LabletSession.objects.bulk_create(chunk)
        SessionStatusChange.objects.bulk_create(
            SessionStatusChange(session=s, from_status="", to_status="PENDING", actor=actor, reason="booked")
            for s in chunk
        )
        ids += [s.pk for s in chunk]
    return ids


TABLES = ("lablet_sessions", "lablet_session_status_changes", "cml_workers", "lablet_definitions")


def analyze() -> None:
    """Refresh the planner's statistics after a bulk insert (as autovacuum would, eventually)."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"ANALYZE {table}")


def vacuum() -> bool:
    """VACUUM ANALYZE the tables a benchmark fills, so that runs start without the dead rows earlier runs left
    (deleted or rolled-back fixtures) and leave none behind; autovacuum keeps a live database in that state.

    Not possible inside a transaction (e.g. under a test): returns False and does nothing then.
    """
    from django.db import connection

    if connection.in_atomic_block:
        return False
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
    return True


def remove_fixtures(tag: str) -> dict[str, int]:
    """Delete everything `seed_*` made under `tag` (sessions first: they protect definitions and workers)."""
    from sessions.models import LabletDefinition, LabletSession
    from workers.models import CMLWorker

    prefix = f"bench-{tag}-"
    sessions, _ = LabletSession.objects.filter(definition__name__startswith=prefix).delete()
    workers, _ = CMLWorker.objects.filter(name__startswith=prefix).delete()
    definitions, _ = LabletDefinition.objects.filter(name__startswith=prefix).delete()
    return {"rows": sessions + workers + definitions}


class CpuClock:
    """CPU seconds spent by this process and by its PostgreSQL backend, so that a rate can be stated per
    CPU-second as well as per wall-clock second (which other load on the machine distorts).

    The backend's time is read from /proc, so only when PostgreSQL runs on this machine; else None.
    """

    def __init__(self):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()" if connection.vendor == "postgresql" else "SELECT NULL")
            pid = cursor.fetchone()[0]
        self._stat = f"/proc/{pid}/stat" if pid and os.path.exists(f"/proc/{pid}/stat") else None
        self._tick = os.sysconf("SC_CLK_TCK")

    def _backend(self) -> float | None:
        if self._stat is None:
            return None
        try:
            with open(self._stat) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def read(self) -> tuple[float, float | None]:
        return time.process_time(), self._backend()

    @staticmethod
    def spent(start: tuple, end: tuple) -> dict:
        own = end[0] - start[0]
        backend = None if start[1] is None or end[1] is None else end[1] - start[1]
        return {"process_s": round(own, 3), "postgres_s": None if backend is None else round(backend, 3)}
