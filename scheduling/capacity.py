"""Pure capacity arithmetic: what a worker has free and whether a session's demand fits it.

`fit_reason` is the one fit rule: placement (`scheduling.placement`) judges a RUNNING worker with it
and the autoscaler (`workers.autoscaler`) judges a template, or a worker on its way, with it, so the
autoscaler launches only what placement will accept.
"""

import math
from dataclasses import dataclass, replace

from lcm.versions import version_key
from workers.states import LicenseType

PERSONAL_MAX_NODES = 20


@dataclass(frozen=True)
class WorkerCapacity:
    """A worker's declared capacity and what the sessions holding capacity on it use (SPEC §2.2)."""

    worker_id: str
    name: str
    status: str
    license_type: str
    cml_version: str
    cpu_total: int
    memory_total: int
    storage_total: int
    nodes_total: int
    ports_total: int
    cpu_used: int = 0
    memory_used: int = 0
    storage_used: int = 0
    nodes_used: int = 0
    ports_used: int = 0
    sessions: int = 0

    @property
    def cpu_free(self) -> int:
        return self.cpu_total - self.cpu_used

    @property
    def memory_free(self) -> int:
        return self.memory_total - self.memory_used

    @property
    def storage_free(self) -> int:
        return self.storage_total - self.storage_used

    @property
    def nodes_free(self) -> int:
        return self.nodes_total - self.nodes_used

    @property
    def ports_free(self) -> int:
        return self.ports_total - self.ports_used

    def claimed(self, demand: "Demand", *, reuse: bool = False, count: int = 1) -> "WorkerCapacity":
        """This capacity with `count` more sessions of `demand` on it (a reused lab brings its own ports).

        `count=-1` gives the capacity after one such session has left.
        """
        return replace(
            self,
            cpu_used=self.cpu_used + count * demand.cpu_cores,
            memory_used=self.memory_used + count * demand.memory_gb,
            storage_used=self.storage_used + count * demand.storage_gb,
            nodes_used=self.nodes_used + count * demand.node_count,
            ports_used=self.ports_used + (0 if reuse else count * demand.ports),
            sessions=self.sessions + count,
        )


@dataclass(frozen=True)
class Demand:
    """What one session of a definition needs from a worker."""

    cpu_cores: int
    memory_gb: int
    storage_gb: int
    node_count: int
    ports: int
    license_affinity: tuple[str, ...] = ()

    @classmethod
    def of(cls, definition) -> "Demand":
        return cls(
            cpu_cores=definition.cpu_cores,
            memory_gb=definition.memory_gb,
            storage_gb=definition.storage_gb,
            node_count=definition.node_count,
            ports=len(definition.port_template),
            license_affinity=tuple(definition.license_affinity or ()),
        )


def licence_serves(worker_licence: str, affinity: tuple[str, ...]) -> bool:
    """ENTERPRISE serves ENTERPRISE and PERSONAL; PERSONAL and EVALUATION serve their own (SPEC §3.2)."""
    if not affinity:
        return True
    served = {worker_licence}
    if worker_licence == LicenseType.ENTERPRISE:
        served.add(LicenseType.PERSONAL)
    return bool(served & set(affinity))


def rejection_reason(capacity: WorkerCapacity, demand: Demand, *, reusable_lab: bool = False) -> str | None:
    """Why `demand` does not fit `capacity` now, or None when it fits. Status is checked by the caller."""
    if not licence_serves(capacity.license_type, demand.license_affinity):
        return f"licence {capacity.license_type} does not serve {'/'.join(demand.license_affinity)}"
    if capacity.license_type == LicenseType.PERSONAL:
        if capacity.sessions >= 1:
            return "PERSONAL licence allows one session per worker"
        if demand.node_count > PERSONAL_MAX_NODES:
            return f"PERSONAL licence allows at most {PERSONAL_MAX_NODES} nodes"
    checks = (
        ("cpu", demand.cpu_cores, capacity.cpu_free),
        ("memory", demand.memory_gb, capacity.memory_free),
        ("storage", demand.storage_gb, capacity.storage_free),
        ("nodes", demand.node_count, capacity.nodes_free),
    )
    for name, needed, free in checks:
        if needed > free:
            return f"not enough {name}: needs {needed}, {free} free"
    if not reusable_lab and demand.ports > capacity.ports_free:
        return f"not enough ports: needs {demand.ports}, {capacity.ports_free} free"
    return None


def version_reason(cml_version: str, version_min: str = "", version_max: str = "") -> str | None:
    """Why a worker's CML version does not satisfy a definition's `[version_min, version_max]` (None: it does).

    A version with fewer parts names every release it prefixes: the seeded templates' AMI pattern
    `cml-2.9*` promises "2.9", which may boot 2.9.0 as well as 2.9.3, and a worker reporting only
    "2.9" may be any of them too. The bounds name series the same way: min `2.9` is from 2.9.0 on,
    max `2.9` is up to the last 2.9.x. A worker fits only when every release its version may be
    lies within the bounds, so "2.9" does not satisfy min "2.9.1" (it may be 2.9.0) and does not
    satisfy max "2.9.0" (it may be 2.9.3), but does satisfy min "2.9" and max "2.9". Guessing in the
    worker's favour instead would let the autoscaler launch a worker that placement, once the worker
    reports 2.9.0, refuses: the session would wait and the next tick would launch again. An unknown
    version ("") satisfies no bound, for the same reason; a definition without bounds takes any worker.
    """
    if not version_min and not version_max:
        return None
    have = version_key(cml_version)
    shown = cml_version or "unknown"
    if version_min:
        low = version_key(version_min)
        width = max(len(have), len(low))
        if not have or _padded(have, width, 0) < _padded(low, width, 0):
            return f"CML {shown} is older than {version_min}"
    if version_max:
        high = version_key(version_max)
        if not have or _padded(have, len(high), math.inf)[: len(high)] > high:
            return f"CML {shown} is newer than {version_max}"
    return None


def _padded(parts: tuple, width: int, fill) -> tuple:
    return parts + (fill,) * (width - len(parts))


def fit_reason(
    capacity: WorkerCapacity, demand: Demand, *, cml_version_min="", cml_version_max="", reusable_lab=False
) -> str | None:
    """Why a session of `demand` (needing CML `[cml_version_min, cml_version_max]`) does not fit `capacity`
    now, or None when it fits: the CML version first, then licence, PERSONAL's limits, resources and ports.
    The worker's status is the caller's business (placement wants RUNNING, the autoscaler counts coming ones).
    """
    return version_reason(capacity.cml_version, cml_version_min, cml_version_max) or rejection_reason(
        capacity, demand, reusable_lab=reusable_lab
    )
