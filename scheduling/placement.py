"""Placement as pure functions over plain data (SPEC §3.2): filter the workers, score by best fit.

`choose_worker` decides one session; `preview` explains the decision for every worker; a
`Fleet` holds a batch's capacities in memory and makes the same decisions as `choose_worker`
without scoring every worker each time. The scheduler loop builds a Fleet from capacities read
in one query and commits its decisions under row locks.

Ranking, best first: the fullest worker (mean used fraction of CPU, memory, storage and nodes,
measured *before* placing) that still fits; ties → a reusable lab of this definition, then the
larger worker, then the lowest id. Fullness is measured before placing because, measured after,
an empty small worker looks fuller than a half-used big one and a heterogeneous fleet opens a new
worker for nearly every session (`manage.py bench_placement` shows the difference). The larger
worker wins a tie between equally full (typically empty) workers because it holds the most
sessions, so fewer workers are in use and the small ones stay free to be stopped.

End-time aware placement (SPEC §10; `choose_worker(..., session_end=, worker_ends=)`, `Fleet.choose(...,
session_end=, worker_ends=)`): before fullness, a worker ranks by how long the session would extend its busy
time (`end_extension`, in 15-minute steps), then by how long it stays busy after the session (`end_rank`), so
sessions that end together share workers, which then empty
together and can be drained. All sessions placed at once with the same end (and no ends given) rank exactly
as before.
"""

import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduling.capacity import (
    PERSONAL_MAX_NODES,
    Demand,
    WorkerCapacity,
    fit_reason,
    licence_serves,
    rejection_reason,
    version_reason,
)
from workers.states import LicenseType

RUNNING = "RUNNING"
EXCLUDED = "excluded by requeue"


@dataclass(frozen=True)
class Candidate:
    """How one worker judges one session: `reason` is None when it fits, `score` (its fullness) orders the fits."""

    worker_id: str
    name: str
    reason: str | None
    score: float | None = None
    reusable_lab: bool = False

    def as_dict(self) -> dict:
        return {
            "worker_id": self.worker_id,
            "name": self.name,
            "fits": self.reason is None,
            "score": self.score,
            "reusable_lab": self.reusable_lab,
            "rejection": self.reason,
        }


def fill(capacity: WorkerCapacity) -> float:
    """How full the worker is now: the mean used fraction of the CPU, memory, storage and nodes it declares."""
    fractions = [
        used / total
        for used, total in (
            (capacity.cpu_used, capacity.cpu_total),
            (capacity.memory_used, capacity.memory_total),
            (capacity.storage_used, capacity.storage_total),
            (capacity.nodes_used, capacity.nodes_total),
        )
        if total > 0
    ]
    return round(sum(fractions) / len(fractions), 6) if fractions else 0.0


def _order(capacity: WorkerCapacity) -> tuple:
    """The ranking without the reusable-lab tie-break: fullest first, then larger, then lowest id."""
    return (
        -fill(capacity),
        -capacity.cpu_total,
        -capacity.memory_total,
        -capacity.storage_total,
        -capacity.nodes_total,
        capacity.worker_id,
    )


# End-time awareness ranks workers by how long the session would keep them busy past the sessions they hold,
# in steps of this many minutes (within a step, best fit decides; up to a minute counts as none), among the
# `END_CANDIDATES` fullest workers that fit (a bounded cost per decision whatever the fleet).
END_STEP_MINUTES = 15
END_CANDIDATES = 32


def end_extension(worker_end, session_end, now) -> int:
    """How many `END_STEP_MINUTES` steps the session would add to the worker's busy time: 0 when the worker's
    sessions end after it anyway, the session's whole remaining time on an empty worker. Times are datetimes or
    minutes (the simulated clock); `worker_end` None or not after `now` means the worker holds nothing."""
    base = worker_end if worker_end is not None and now is not None and worker_end > now else now
    if base is None:
        return 0
    extra = session_end - base
    minutes = extra.total_seconds() / 60 if hasattr(extra, "total_seconds") else extra
    return max(0, math.ceil((minutes - 1) / END_STEP_MINUTES))


def end_rank(worker_end, session_end, now) -> tuple[int, int]:
    """(steps the session extends the worker's busy time, steps the worker stays busy after the session ends): the
    least extension first, then the worker whose sessions end closest after it (sessions that end together)."""
    extension = end_extension(worker_end, session_end, now)
    if extension or worker_end is None:
        return extension, 0
    return 0, end_extension(session_end, worker_end, session_end)


def rank_key(capacity: WorkerCapacity, reusable_lab: bool = False) -> tuple:
    """Sort key of a worker that fits, best first (see the module docstring)."""
    fullness, *rest = _order(capacity)
    return (fullness, not reusable_lab, *rest)


def eligible(capacity: WorkerCapacity, demand: Demand, cml_version_min: str = "", cml_version_max: str = "") -> bool:
    """The filters of `fit_reason` that do not depend on what is placed (CML version, licence, PERSONAL's node
    limit), plus status RUNNING."""
    return (
        capacity.status == RUNNING
        and version_reason(capacity.cml_version, cml_version_min, cml_version_max) is None
        and licence_serves(capacity.license_type, demand.license_affinity)
        and not (capacity.license_type == LicenseType.PERSONAL and demand.node_count > PERSONAL_MAX_NODES)
    )


def evaluate(
    capacity: WorkerCapacity,
    demand: Demand,
    *,
    cml_version_min: str = "",
    cml_version_max: str = "",
    reusable_lab: bool = False,
) -> Candidate:
    """Judge one worker for one session."""
    if capacity.status != RUNNING:
        reason = f"worker is {capacity.status}, not RUNNING"
    else:
        reason = fit_reason(
            capacity,
            demand,
            cml_version_min=cml_version_min,
            cml_version_max=cml_version_max,
            reusable_lab=reusable_lab,
        )
    score = None if reason else fill(capacity)
    return Candidate(capacity.worker_id, capacity.name, reason, score, reusable_lab)


def preview(
    capacities: Iterable[WorkerCapacity],
    demand: Demand,
    *,
    cml_version_min: str = "",
    cml_version_max: str = "",
    reusable_on: frozenset[str] = frozenset(),
    excluded: frozenset[str] = frozenset(),
) -> list[Candidate]:
    """Every worker judged, the chosen one first, then the other fits by preference, then rejections
    (`excluded`: workers a requeue ruled out for this session, rejected as "excluded by requeue")."""
    judged = [
        (
            c,
            evaluate(
                c,
                demand,
                cml_version_min=cml_version_min,
                cml_version_max=cml_version_max,
                reusable_lab=c.worker_id in reusable_on,
            ),
        )
        for c in capacities
    ]
    judged = [(c, Candidate(c.worker_id, c.name, EXCLUDED) if c.worker_id in excluded else j) for c, j in judged]
    fits = sorted((pair for pair in judged if pair[1].reason is None), key=lambda p: rank_key(p[0], p[1].reusable_lab))
    rejected = sorted((c for _, c in judged if c.reason is not None), key=lambda c: c.name)
    return [c for _, c in fits] + rejected


def choose_worker(
    capacities: Iterable[WorkerCapacity],
    demand: Demand,
    *,
    cml_version_min: str = "",
    cml_version_max: str = "",
    reusable_on: frozenset[str] = frozenset(),
    session_end=None,
    worker_ends: Mapping | None = None,
    now=None,
    excluded: frozenset[str] = frozenset(),
) -> Candidate | None:
    """The worker for this session (best fit, see the module docstring), or None when none fits (`excluded`:
    workers a requeue ruled out for it).

    End-time aware when `worker_ends` (worker id -> the latest end of the sessions it holds) and `session_end`
    are given: see `end_extension`."""
    best, best_key = None, None
    fits = []
    for capacity in capacities:
        reusable = capacity.worker_id in reusable_on
        if capacity.worker_id in excluded or not eligible(capacity, demand, cml_version_min, cml_version_max):
            continue
        if rejection_reason(capacity, demand, reusable_lab=reusable) is not None:
            continue
        fits.append(capacity)
        key = rank_key(capacity, reusable)
        if best_key is None or key < best_key:
            best, best_key = capacity, key
    if worker_ends is not None and session_end is not None and fits:
        best_key = None
        for capacity in sorted(fits, key=_order)[:END_CANDIDATES]:
            fullness, *rest = _order(capacity)
            reusable = capacity.worker_id in reusable_on
            key = (*end_rank(worker_ends.get(capacity.worker_id), session_end, now), fullness, not reusable, *rest)
            if best_key is None or key < best_key:
                best, best_key = capacity, key
    if best is None:
        return None
    return Candidate(best.worker_id, best.name, None, fill(best), best.worker_id in reusable_on)


class Fleet:
    """A batch's worker capacities held in memory: `choose` decides exactly like `choose_worker`, fast.

    Workers are kept sorted by fullness, then size, then id (which do not depend on the session),
    so a decision walks from the front and stops at the first worker that fits instead of
    scoring every worker. The reusable-lab tie-break only reorders equally full workers, so it
    is settled among the few workers holding such a lab. The filters that do not change while a
    batch is decided (status, version, licence) are computed once per kind of session.
    `claim` and `release` keep the books as sessions are placed and leave; `refresh` replaces
    capacities re-read from the database.
    """

    def __init__(self, capacities: Iterable[WorkerCapacity] = ()):
        self._capacity: dict[str, WorkerCapacity] = {}
        self._key: dict[str, tuple] = {}
        # Per worker: (cpu, memory, storage, nodes, ports) free, and whether a PERSONAL licence blocks it.
        self._free: dict[str, tuple] = {}
        self._sorted: list[tuple] = []
        self._eligible: dict[tuple, frozenset[str]] = {}
        for capacity in capacities:
            self._store(capacity, insert=False)
        self._sorted.sort()

    def __len__(self) -> int:
        return len(self._capacity)

    def __contains__(self, worker_id) -> bool:
        return worker_id in self._capacity

    def capacity(self, worker_id: str) -> WorkerCapacity:
        return self._capacity[worker_id]

    def capacities(self) -> list[WorkerCapacity]:
        """Every worker's capacity as it stands in this fleet, in ranking order."""
        return [self._capacity[key[-1]] for key in self._sorted]

    def _store(self, capacity: WorkerCapacity, *, insert: bool = True) -> None:
        worker_id = capacity.worker_id
        old = self._key.get(worker_id)
        if old is not None:
            del self._sorted[bisect_left(self._sorted, old)]
        key = _order(capacity)
        self._capacity[worker_id] = capacity
        self._key[worker_id] = key
        self._free[worker_id] = (
            capacity.cpu_free,
            capacity.memory_free,
            capacity.storage_free,
            capacity.nodes_free,
            capacity.ports_free,
            capacity.license_type == LicenseType.PERSONAL and capacity.sessions >= 1,
        )
        if insert:
            insort(self._sorted, key)
        else:
            self._sorted.append(key)

    def refresh(self, capacities: Iterable[WorkerCapacity]) -> None:
        """Replace (or add) workers' capacities, e.g. re-read after a commit was refused."""
        for capacity in capacities:
            self._store(capacity)
        self._eligible.clear()

    def claim(self, worker_id: str, demand: Demand, *, reuse: bool = False) -> None:
        """Count one session of `demand` on the worker (`reuse`: it takes a wiped lab, whose ports it keeps)."""
        self._store(self._capacity[worker_id].claimed(demand, reuse=reuse))

    def release(self, worker_id: str, demand: Demand, *, reuse: bool = False) -> None:
        """A session of `demand` left the worker (the inverse of `claim`)."""
        self._store(self._capacity[worker_id].claimed(demand, reuse=reuse, count=-1))

    def _eligible_ids(self, demand: Demand, version_min: str, version_max: str, excluded=frozenset()) -> frozenset[str]:
        """The workers this kind of session may go to (less those a requeue excluded for this one)."""
        kind = (demand.license_affinity, demand.node_count > PERSONAL_MAX_NODES, version_min, version_max)
        ids = self._eligible.get(kind)
        if ids is None:
            ids = frozenset(
                worker_id
                for worker_id, capacity in self._capacity.items()
                if eligible(capacity, demand, version_min, version_max)
            )
            self._eligible[kind] = ids
        return ids - excluded if excluded else ids

    def choose(
        self,
        demand: Demand,
        *,
        cml_version_min: str = "",
        cml_version_max: str = "",
        reusable_on: frozenset[str] = frozenset(),
        session_end=None,
        worker_ends: Mapping | None = None,
        now=None,
        excluded: frozenset[str] = frozenset(),
    ) -> Candidate | None:
        """The worker `choose_worker` would pick for this session from these capacities, or None."""
        if session_end is not None and worker_ends is not None:
            versions = (cml_version_min, cml_version_max)
            return self._choose_by_end(demand, versions, reusable_on, session_end, worker_ends, now, excluded)
        return self._choose_best_fit(demand, cml_version_min, cml_version_max, reusable_on, excluded)

    def _choose_best_fit(self, demand: Demand, cml_version_min: str, cml_version_max: str, reusable_on, excluded):
        ok = self._eligible_ids(demand, cml_version_min, cml_version_max, excluded)
        cpu, memory, storage, nodes, ports = (
            demand.cpu_cores,
            demand.memory_gb,
            demand.storage_gb,
            demand.node_count,
            demand.ports,
        )
        free = self._free
        found = None
        for key in self._sorted:
            worker_id = key[-1]
            f = free[worker_id]
            if f[0] < cpu or f[1] < memory or f[2] < storage or f[3] < nodes or f[5] or worker_id not in ok:
                continue
            if f[4] < ports and worker_id not in reusable_on:
                continue
            found = key
            break
        if found is None:
            return None
        reusable = found[-1] in reusable_on
        if reusable_on and not reusable:
            # A reusable lab wins a tie in fullness: look among the (few) workers holding one.
            for worker_id in reusable_on:
                key = self._key.get(worker_id)
                if key is None or key[0] != found[0] or worker_id not in ok:
                    continue
                f = free[worker_id]
                if f[0] < cpu or f[1] < memory or f[2] < storage or f[3] < nodes or f[5]:
                    continue
                if not reusable or key < found:
                    found, reusable = key, True
        capacity = self._capacity[found[-1]]
        return Candidate(capacity.worker_id, capacity.name, None, -found[0], reusable)

    def _choose_by_end(self, demand: Demand, versions: tuple, reusable_on, session_end, worker_ends, now, excluded):
        """`choose_worker`'s end-time aware choice: walks the workers in ranking order over the `END_CANDIDATES`
        fullest that fit, stopping at the first that it extends by nothing; the least extension wins."""
        ok = self._eligible_ids(demand, *versions, excluded)
        best, best_key = None, None
        seen = 0
        for key in self._sorted:
            worker_id = key[-1]
            f = self._free[worker_id]
            reusable = worker_id in reusable_on
            if f[0] < demand.cpu_cores or f[1] < demand.memory_gb or f[2] < demand.storage_gb:
                continue
            if f[3] < demand.node_count or f[5] or worker_id not in ok or (f[4] < demand.ports and not reusable):
                continue
            fullness, *rest = key
            rank = (*end_rank(worker_ends.get(worker_id), session_end, now), fullness, not reusable, *rest)
            if best_key is None or rank < best_key:
                best, best_key = worker_id, rank
                if rank[:2] == (0, 0) and (reusable or not reusable_on):
                    break
            seen += 1
            if seen >= END_CANDIDATES:
                break
        if best is None:
            return None
        capacity = self._capacity[best]
        return Candidate(capacity.worker_id, capacity.name, None, -best_key[2], best in reusable_on)
