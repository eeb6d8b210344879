"""FilterSets: valid filters narrow the rows, bad values are form errors (never exceptions)."""

from datetime import timedelta

import pytest
from django.http import QueryDict
from django.utils import timezone

from grading.filters import ScoreReportFilterSet
from grading.models import ScoreReport
from sessions.filters import SessionFilterSet
from sessions.models import LabletSession
from tests.factories import ScoreReportFactory, SessionFactory, WorkerFactory
from workers.filters import WorkerFilterSet
from workers.models import CMLWorker

pytestmark = pytest.mark.django_db


def _q(text):
    return QueryDict(text)


def test_session_filters():
    worker = WorkerFactory()
    a = SessionFactory(status="RUNNING", worker=worker, owner="alice")
    b = SessionFactory(status="READY", owner="bob")
    SessionFactory(status="ARCHIVED")
    qs = LabletSession.objects.all()
    assert set(SessionFilterSet(_q("status=running,Ready"), qs).qs) == {a, b}
    assert list(SessionFilterSet(_q("owner=alice"), qs).qs) == [a]
    assert list(SessionFilterSet(_q(f"worker={worker.pk}"), qs).qs) == [a]
    later = (timezone.now() + timedelta(days=1)).isoformat()
    assert SessionFilterSet(QueryDict(mutable=True) | {"from": later}, qs).qs.count() == 0


@pytest.mark.parametrize(
    "query", ["status=FLYING", "status=100%25off", "definition=not-a-uuid", "from=yesterday", "worker=1"]
)
def test_bad_session_filter_values_are_form_errors(query):
    filterset = SessionFilterSet(_q(query), LabletSession.objects.all())
    assert not filterset.is_valid()
    assert all(str(message) for messages in filterset.errors.values() for message in messages)


def test_report_and_worker_filters():
    passed = ScoreReportFactory(passed=True)
    ScoreReportFactory(passed=False, score=10)
    assert list(ScoreReportFilterSet(_q("passed=true"), ScoreReport.objects.all()).qs) == [passed]
    assert list(ScoreReportFilterSet(_q(f"owner={passed.lablet_session.owner}"), ScoreReport.objects.all()).qs) == [
        passed
    ]
    running = WorkerFactory(status="RUNNING")
    WorkerFactory(status="STOPPED")
    assert list(WorkerFilterSet(_q("status=running"), CMLWorker.objects.all()).qs) == [running]


def test_odd_utc_offsets_do_not_reach_the_database():
    from django.http import QueryDict

    query = QueryDict(mutable=True)
    query["from"] = "2030-01-01T10:00:00-20:53"
    filterset = SessionFilterSet(query, LabletSession.objects.all())
    assert filterset.is_valid(), filterset.errors
    assert list(filterset.qs) == []
