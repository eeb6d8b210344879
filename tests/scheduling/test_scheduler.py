"""The scheduler tick: gating by lead time, batch placement within capacity, racing schedulers."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from lcm.coordination import InProcessCoordinator
from scheduling.scheduler import place_pending
from scheduling.selectors import worker_capacities
from sessions.models import LabletSession
from tests.factories import DefinitionFactory, SessionFactory, WorkerFactory


@pytest.fixture(autouse=True)
def in_process_coordination(monkeypatch):
    import lcm.coordination as coordination

    monkeypatch.setattr(coordination, "_coordinator", InProcessCoordinator())


@pytest.mark.django_db
def test_only_sessions_within_the_lead_time_are_placed():
    WorkerFactory()
    now = timezone.now()
    soon = SessionFactory(timeslot_start=now + timedelta(minutes=10))
    later = SessionFactory(timeslot_start=now + timedelta(hours=3))
    report = place_pending()
    assert [sid for sid, _ in report.placed] == [str(soon.pk)]
    later.refresh_from_db()
    assert later.status == "PENDING"


@pytest.mark.django_db
def test_a_batch_fills_workers_best_fit_without_overbooking():
    definition = DefinitionFactory(cpu_cores=4, memory_gb=8, storage_gb=10)
    small = WorkerFactory(name="small", cpu_cores=8)
    big = WorkerFactory(name="big", cpu_cores=16)
    sessions = [SessionFactory(definition=definition) for _ in range(8)]
    report = place_pending()
    assert len(report.placed) == 6  # 2 fit on small, 4 on big
    assert len(report.waiting) == 2
    capacities = worker_capacities()
    assert capacities[str(small.pk)].cpu_used == 8
    assert capacities[str(big.pk)].cpu_used == 16
    placed = LabletSession.objects.filter(pk__in=[s.pk for s in sessions], status="SCHEDULED")
    assert placed.count() == 6
    # The soonest sessions were placed first.
    waiting_ids = {sid for sid, _ in report.waiting}
    assert waiting_ids == {str(s.pk) for s in sorted(sessions, key=lambda s: (s.timeslot_start, s.created_at))[6:]}


@pytest.mark.django_db
def test_a_follower_does_not_place():
    import lcm.coordination as coordination

    WorkerFactory()
    SessionFactory()
    coordination._coordinator._data["/lcm/leader/placement"] = "someone-else"
    report = place_pending()
    assert report.leader is False and report.placed == []


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_at_once_never_overbook_a_worker():
    definition = DefinitionFactory(cpu_cores=4, memory_gb=4, storage_gb=4)
    workers = [WorkerFactory(cpu_cores=8) for _ in range(3)]  # room for 6 sessions in all
    for _ in range(12):
        SessionFactory(definition=definition)
    barrier = threading.Barrier(2)
    reports, errors = [], []

    def scheduler():
        try:
            barrier.wait()
            reports.append(place_pending(require_leader=False))
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sum(len(r.placed) for r in reports) == 6
    capacities = worker_capacities()
    for worker in workers:
        assert capacities[str(worker.pk)].cpu_used <= worker.cpu_cores
    assert LabletSession.objects.filter(status="SCHEDULED").count() == 6


@pytest.mark.django_db
def test_the_leader_goes_on_placing_while_rounds_place_something():
    """Sessions beyond one round's limit (or booked during a round) are placed in the same tick."""
    WorkerFactory(cpu_cores=64, memory_gb=256, storage_gb=1000, max_nodes=100)
    sessions = [SessionFactory() for _ in range(7)]
    report = place_pending(limit=3)
    assert sorted(sid for sid, _ in report.placed) == sorted(str(s.pk) for s in sessions)
    assert not LabletSession.objects.filter(status="PENDING").exists()
