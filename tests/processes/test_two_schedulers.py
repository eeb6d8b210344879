"""Two scheduler processes at once (the leader lease lost, or etcd down): never a worker overbooked, never
a port handed out twice. The in-process variant (two threads) is tests/scheduling/test_scheduler.py."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from lcm.tools.processes import database_url_of
from scheduling.selectors import worker_capacities
from sessions.models import LabletSession
from tests.factories import DefinitionFactory, LabRecordFactory, SessionFactory, WorkerFactory
from workers.models import Port

ROOT = Path(__file__).resolve().parents[2]
# Each process waits for the same instant, then places (without the lease, as if etcd were down) and
# allocates three ports for each of its own lab records, all on the same worker.
SCHEDULER = """
import sys, time
import django
django.setup()
from scheduling.scheduler import place_pending
from workers.port_services import ports_allocate
from workers.models import LabRecord
start, labs = float(sys.argv[1]), sys.argv[2].split(",")
while time.time() < start:
    time.sleep(0.001)
placed = sum(len(place_pending(require_leader=False).placed) for _ in range(3))
for lab in LabRecord.objects.filter(pk__in=labs).select_related("worker"):
    ports_allocate(lab, ["console", "vnc", "ssh"])
print(placed)
"""


@pytest.mark.django_db(transaction=True)
def test_two_scheduler_processes_never_overbook_or_duplicate_a_port():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: both processes share the test database")
    definition = DefinitionFactory(cpu_cores=4, memory_gb=4, storage_gb=4)
    workers = [WorkerFactory(cpu_cores=8, port_range_start=2000, port_range_end=2199) for _ in range(3)]
    for _ in range(12):
        SessionFactory(definition=definition)  # 12 bookings, room for 6
    labs = [[str(LabRecordFactory(worker=workers[0]).pk) for _ in range(20)] for _ in range(2)]
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="lcm.settings",
        DATABASE_URL=database_url_of(connection.settings_dict),
        LCM_PROJECTION_ENABLED="0",
        CELERY_BROKER_URL="",
        LCM_ETCD_ENDPOINTS="",
    )
    start = time.time() + 5  # both interpreters are up by then
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SCHEDULER, str(start), ",".join(mine)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mine in labs
    ]
    outputs = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("a scheduler process did not finish within 90 s")
        assert process.returncode == 0, err[-2000:]
        outputs.append(int(out.strip().splitlines()[-1]))

    assert sum(outputs) == 6, outputs
    assert LabletSession.objects.filter(status="SCHEDULED").count() == 6
    capacities = worker_capacities()
    for worker in workers:
        assert capacities[str(worker.pk)].cpu_used <= worker.cpu_cores
    ports = list(Port.objects.filter(worker=workers[0]).values_list("port", flat=True))
    assert len(ports) == 2 * 20 * 3 == len(set(ports))
