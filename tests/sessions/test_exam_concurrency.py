"""Admission under concurrency (SPEC §8, §10): two bookings into the last capacity at once cannot both succeed.

Each booking runs in its own thread with its own database connection; both start together behind a barrier.
"""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scheduling.admission import CapacityRefused
from sessions.booking import session_create
from sessions.exams import exam_book
from sessions.models import Exam, LabletSession
from tests.factories import DefinitionFactory, WorkerFactory
from workers.models import SystemSettings

pytestmark = pytest.mark.django_db(transaction=True)


def _race(calls):
    """Run each call in its own thread (own connection), all released at once; returns what each returned or raised."""
    barrier = threading.Barrier(len(calls))
    outcomes = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait(timeout=30)
            outcomes[index] = call()
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def test_two_exams_into_the_last_capacity_exactly_one_books():
    SystemSettings.objects.update_or_create(pk=1, defaults={"admission": "refuse"})
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    for _ in range(2):
        WorkerFactory(cpu_cores=16, memory_gb=64)  # 16 sessions in all
    start = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)

    def book(prefix):
        return lambda: exam_book(
            name=prefix, definition=definition, timeslot_start=start, timeslot_end=start + timedelta(minutes=60),
            candidates=[{"owner": f"{prefix}-{i}"} for i in range(10)], actor=prefix,
        )  # fmt: skip

    outcomes = _race([book("first"), book("second")])
    booked = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, CapacityRefused)]
    assert len(booked) == 1 and len(refused) == 1, outcomes
    assert refused[0].verdict.shortfall["sessions"] == 4
    assert Exam.objects.count() == 1 and LabletSession.objects.count() == 10


def test_single_bookings_racing_for_the_last_places_never_overbook():
    SystemSettings.objects.update_or_create(pk=1, defaults={"admission": "refuse"})
    definition = DefinitionFactory(cpu_cores=4, memory_gb=4)
    WorkerFactory(cpu_cores=16, memory_gb=64)  # 4 sessions
    start = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    calls = [
        (lambda i=i: session_create(definition=definition, owner=f"o{i}", actor="t", timeslot_start=start))
        for i in range(6)
    ]
    outcomes = _race(calls)
    assert sum(isinstance(o, CapacityRefused) for o in outcomes) == 2, outcomes
    assert LabletSession.objects.count() == 4
