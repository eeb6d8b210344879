"""Sessions through the real processes: Celery worker, beat, watcher, gunicorn, etcd, simulators (issue 4).

50 sessions on 5 simulated workers reach READY by themselves; the candidates then log in and finish
on the LDS simulator's control API, whose CloudEvents reach gunicorn's webhook, and the loops take
every session through grading and teardown to ARCHIVED. Afterwards nothing is held: no lab is
started in CML, every LDS session is released, no capacity is held on a worker and the only ports
still allocated belong to WIPED labs, which keep their ports for reuse (SPEC §2.4).
"""

import pytest

from grading.models import ScoreReport
from lcm.tools.bench.rig import drive
from sessions.models import LabletSession
from tests.support.processes import log_tails
from tests.support.waiting import wait_until
from workers.models import LabRecord, Port

SESSIONS = 50
WORKERS = 5


@pytest.mark.django_db(transaction=True)
def test_fifty_sessions_reach_ready_by_themselves_then_archive_without_leaks(start_stack):
    stack, rig = start_stack()
    rig.add_workers(WORKERS, cpu_cores=10, memory_gb=64, storage_gb=1000, max_nodes=200)
    definition = rig.definition()
    ids = rig.book(definition, SESSIONS)

    wait_until(
        lambda: rig.statuses(ids).get("READY", 0) == SESSIONS,
        timeout=120,
        what=f"{SESSIONS} sessions reaching READY",
        details=lambda: f"{rig.statuses(ids)}\n{log_tails(stack)}",
    )
    sessions = LabletSession.objects.filter(pk__in=ids).select_related("worker")
    # Best fit fills the fullest worker first; 10 one-core sessions fill a worker, so all five are used.
    assert {s.worker.name for s in sessions} == set(rig.worker_names)
    assert all(s.user_session.login_url for s in sessions)

    drive(rig, definition, SESSIONS, rate=None, timeout=180, booked=ids)

    assert rig.statuses(ids) == {"ARCHIVED": SESSIONS}
    assert ScoreReport.objects.filter(lablet_session__in=ids).count() == SESSIONS
    assert rig.leaks(ids) == []
    # Each lab was wiped and kept for reuse with its ports; no other port is held.
    labs = LabRecord.objects.filter(worker__name__in=rig.worker_names)
    assert set(labs.values_list("status", flat=True)) == {"WIPED"}
    assert Port.objects.filter(lab_record__in=labs).count() == 3 * labs.count()
