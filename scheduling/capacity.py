"""Pure capacity arithmetic: what a worker has free and whether a session's demand fits it."""

from dataclasses import dataclass, replace

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
