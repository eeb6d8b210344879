"""Placement as pure functions over plain data (SPEC §3.2): filter the workers, score by best fit.

`choose_worker` decides one session; `preview` explains the decision for every worker. The
scheduler loop feeds them capacities read in one query and commits under row locks.
"""

import re
from dataclasses import dataclass

from scheduling.capacity import Demand, WorkerCapacity, rejection_reason

RUNNING = "RUNNING"


def version_tuple(version: str) -> tuple[int, ...]:
    """`2.10.1` → (2, 10, 1): versions compare numerically (2.10 > 2.9)."""
    return tuple(int(p) for p in re.findall(r"\d+", (version or "").split("-")[0]))


@dataclass(frozen=True)
class Candidate:
    """How one worker judges one session: `reason` is None when it fits, `score` orders the fits."""

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


def _cml_version_reason(capacity: WorkerCapacity, version_min: str, version_max: str) -> str | None:
    have = version_tuple(capacity.cml_version)
    if version_min and (not have or have < version_tuple(version_min)):
        return f"CML {capacity.cml_version or 'unknown'} is older than {version_min}"
    if version_max and (not have or have[: len(version_tuple(version_max))] > version_tuple(version_max)):
        return f"CML {capacity.cml_version or 'unknown'} is newer than {version_max}"
    return None


def fill_score(capacity: WorkerCapacity, demand: Demand) -> float:
    """Best fit: how full the worker would be after placing (the mean used fraction of CPU, memory,
    storage and nodes); the fullest worker that still fits wins."""
    fractions = []
    for used, need, total in (
        (capacity.cpu_used, demand.cpu_cores, capacity.cpu_total),
        (capacity.memory_used, demand.memory_gb, capacity.memory_total),
        (capacity.storage_used, demand.storage_gb, capacity.storage_total),
        (capacity.nodes_used, demand.node_count, capacity.nodes_total),
    ):
        if total > 0:
            fractions.append((used + need) / total)
    return round(sum(fractions) / len(fractions), 6) if fractions else 0.0


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
        reason = _cml_version_reason(capacity, cml_version_min, cml_version_max) or rejection_reason(
            capacity, demand, reusable_lab=reusable_lab
        )
    score = None if reason else fill_score(capacity, demand)
    return Candidate(capacity.worker_id, capacity.name, reason, score, reusable_lab)


def preview(
    capacities: list[WorkerCapacity],
    demand: Demand,
    *,
    cml_version_min: str = "",
    cml_version_max: str = "",
    reusable_on: frozenset[str] = frozenset(),
) -> list[Candidate]:
    """Every worker judged, the chosen one first, then the other fits by preference, then rejections."""
    judged = [
        evaluate(
            c,
            demand,
            cml_version_min=cml_version_min,
            cml_version_max=cml_version_max,
            reusable_lab=c.worker_id in reusable_on,
        )
        for c in capacities
    ]
    fits = sorted((c for c in judged if c.reason is None), key=lambda c: (-c.score, not c.reusable_lab, c.worker_id))
    rejected = sorted((c for c in judged if c.reason is not None), key=lambda c: c.name)
    return fits + rejected


def choose_worker(
    capacities: list[WorkerCapacity],
    demand: Demand,
    *,
    cml_version_min: str = "",
    cml_version_max: str = "",
    reusable_on: frozenset[str] = frozenset(),
) -> Candidate | None:
    """The worker for this session (best fit; ties → a reusable lab of this definition, then lowest id), or None."""
    ranked = preview(
        capacities, demand, cml_version_min=cml_version_min, cml_version_max=cml_version_max, reusable_on=reusable_on
    )
    return ranked[0] if ranked and ranked[0].reason is None else None
