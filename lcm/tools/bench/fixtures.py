"""What the benchmarks share outside memory (SPEC §6.3): percentiles, a throwaway etcd, and database
fixtures created by a benchmark and removed by it (definitions, workers, sessions under a `bench-<tag>-`
prefix), with the after-commit listeners detached, VACUUM/ANALYZE, and CPU accounting.

Imported by the `bench_*` commands (after Django is set up), so models are imported at module level.
"""

import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

from lcm.events import changes_committed, status_changed
from lcm.tools.bench.packing import DURATIONS, SESSION_MIX
from lcm.tools.processes import etcd_binary, free_ports
from scheduling.capacity import WorkerCapacity
from sessions.models import LabletDefinition, LabletSession, SessionStatusChange
from workers.models import CMLWorker

# --- small helpers -------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method); the only sample when there is one."""
    if not samples:
        return 0.0
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


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
    client_port, peer_port = free_ports(2)
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
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def demo_lab_yaml() -> str:
    return (Path(settings.BASE_DIR) / "sessions" / "demo" / "demo-lab.yaml").read_text()


def seed_definitions(tag: str, *, actor: str, grading: bool = False) -> dict:
    """One ACTIVE definition per SESSION_MIX shape, named `bench-<tag>-<shape>`; `{shape: definition}`.

    Written directly (fixture data): the shapes' node and port counts need no lab YAML of their own.
    """
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
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"ANALYZE {table}")


def vacuum() -> bool:
    """VACUUM ANALYZE the tables a benchmark fills, so that runs start without the dead rows earlier runs left
    (deleted or rolled-back fixtures) and leave none behind; autovacuum keeps a live database in that state.

    Not possible inside a transaction (e.g. under a test): returns False and does nothing then.
    """
    if connection.in_atomic_block:
        return False
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
    return True


def remove_fixtures(tag: str) -> dict[str, int]:
    """Delete everything `seed_*` made under `tag` (sessions first: they protect definitions and workers)."""
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
