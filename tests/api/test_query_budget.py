"""Every list endpoint runs the same number of queries for 10 rows as for 200 (no N+1; STYLE meta-test)."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from lcm.api.schema import openapi_document
from sessions.models import SessionStatusChange
from tests.factories import (
    GradingSessionFactory,
    LabRecordFactory,
    ScoreReportFactory,
    SessionFactory,
    TemplateFactory,
    UserSessionFactory,
    WorkerFactory,
)
from workers.models import Port

pytestmark = pytest.mark.django_db


def _sessions(n, world):
    for _ in range(n):
        session = SessionFactory(definition=world["definition"], worker=world["worker"], status="RUNNING")
        UserSessionFactory(lablet_session=session)


def _history(n, world):
    SessionStatusChange.objects.bulk_create(
        SessionStatusChange(session=world["session"], to_status="PENDING", actor="t") for _ in range(n)
    )


def _reports(n, world):
    for _ in range(n):
        report = ScoreReportFactory(lablet_session=SessionFactory(definition=world["definition"]))
        report.sections.create(name="a", score=1, max_score=2)
        report.sections.create(name="b", score=1, max_score=2)


def _workers(n, world):
    template = TemplateFactory()
    for _ in range(n):
        worker = WorkerFactory(template=template)
        SessionFactory(definition=world["definition"], worker=worker, status="RUNNING")


def _labs(n, world):
    for _ in range(n):
        lab = LabRecordFactory(worker=world["worker"], definition=world["definition"])
        port = 3000 + Port.objects.count()
        Port.objects.create(worker=world["worker"], port=port, lab_record=lab, name="p")


def _definitions(n, world):
    from tests.factories import DefinitionFactory

    DefinitionFactory.create_batch(n)


def _templates(n, world):
    TemplateFactory.create_batch(n)


def _exams(n, world):
    from sessions.models import Exam

    for _ in range(n):
        exam = Exam.objects.create(
            name="e", definition=world["definition"], timeslot_start=world["session"].timeslot_start,
            timeslot_end=world["session"].timeslot_end,
        )  # fmt: skip
        SessionFactory(definition=world["definition"], exam=exam)


def _evidence(n, world):
    from grading.models import EvidenceItem  # Imported here: as the factories above, only this filler needs it.

    for _ in range(n):
        key = f"sessions/{world['session'].pk}/node_config/{uuid.uuid4()}"
        EvidenceItem.objects.create(
            lablet_session=world["session"], kind="node_config", object_key=key, sha256="0" * 64
        )


def _grading(n, world):
    GradingSessionFactory.create_batch(n, lablet_session=world["session"])


# (list URL, what adds rows to it); `{session}` is a session's id.
LISTS = {
    "/api/v1/sessions/": _sessions,
    "/api/v1/sessions/{session}/history": _history,
    "/api/v1/sessions/{session}/evidence/": _evidence,
    "/api/v1/definitions/": _definitions,
    "/api/v1/score-reports/": _reports,
    "/api/v1/workers/": _workers,
    "/api/v1/worker-templates/": _templates,
    "/api/v1/lab-records/": _labs,
    "/api/internal/sessions/": _sessions,
    "/api/v1/exams/": _exams,
}


def test_every_list_endpoint_is_covered():
    listed = {
        path.replace("{id}", "{session}")
        for path, ops in openapi_document()["paths"].items()
        if "get" in ops and "page_size" in {p["name"] for p in ops["get"].get("parameters", [])}
    }
    assert listed == set(LISTS)


def _count(client, url) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured.captured_queries), response.json()["count"]


@pytest.mark.parametrize("path", sorted(LISTS))
def test_list_queries_do_not_grow_with_rows(path, admin_api, internal_api, definition, worker, session):
    world = {"definition": definition, "worker": worker, "session": session}
    client = internal_api if path.startswith("/api/internal/") else admin_api
    url = path.format(session=session.pk) + ("&" if "?" in path else "?") + "page_size=500"
    add = LISTS[path]
    client.get(url)  # warm-up: token `last_used_at` and any lazy setup
    add(10, world)
    small, small_rows = _count(client, url)
    add(190, world)
    large, large_rows = _count(client, url)
    assert large_rows >= small_rows + 190
    assert small == large, f"{path}: {small} queries at {small_rows} rows, {large} at {large_rows}"
