"""Fixtures for the page tests: users with roles, a small realistic data set, and (for the browser
tests) Chromium driven by Playwright against pytest-django's live server."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from grading.models import ScoreSection
from sessions.models import SessionStatusChange
from tests.factories import (
    DefinitionFactory,
    GradingSessionFactory,
    LabRecordFactory,
    ScoreReportFactory,
    SessionFactory,
    TemplateFactory,
    UserSessionFactory,
    WorkerFactory,
)
from workers.models import Port

ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture
def instructor_client(client, instructor):
    client.force_login(instructor)
    return client


def make_session(status, *, definition=None, worker=None, owner=None, with_children=True, **fields):
    """A session in `status` with the children that state implies (user session, grading, report)."""
    definition = definition or DefinitionFactory()
    holds_worker = status not in ("PENDING",)
    extra = {"owner": owner} if owner else {}
    session = SessionFactory(
        status=status, definition=definition, worker=worker if holds_worker else None, **extra, **fields
    )
    SessionStatusChange.objects.create(session=session, to_status="PENDING", actor="test", reason="booked")
    if status != "PENDING":
        SessionStatusChange.objects.create(
            session=session, from_status="PENDING", to_status=status, actor="test", reason="set up by the test"
        )
    if not with_children:
        return session
    if status in ("READY", "RUNNING", "COLLECTING", "GRADING", "STOPPING", "STOPPED", "ARCHIVED"):
        UserSessionFactory(
            lablet_session=session,
            status="ACTIVE" if status == "RUNNING" else "PROVISIONED",
            devices=[
                {"label": "edge-router", "protocol": "serial", "host": "10.0.0.5", "port": 2001},
                {"label": "workstation", "protocol": "vnc", "host": "10.0.0.5", "port": 2003},
            ],
        )
    if status in ("GRADING", "STOPPING", "STOPPED", "ARCHIVED"):
        grading = GradingSessionFactory(lablet_session=session, status="SUBMITTED", grading_session_id="ge-1")
        report = ScoreReportFactory(lablet_session=session, grading_session=grading, score=82, passed=True)
        ScoreSection.objects.bulk_create(
            [
                ScoreSection(report=report, position=0, name="Routing", score=40, max_score=50, passed=True),
                ScoreSection(report=report, position=1, name="Security", score=42, max_score=50, passed=True),
            ]
        )
    return session


@pytest.fixture
def fleet(db):
    """A definition, a template, two workers (one with a lab and ports) and a session in every state."""
    template = TemplateFactory(name="m5-enterprise")
    # Graded by hand and held for review, so every button of SPEC §5.4 has a session that shows it.
    definition = DefinitionFactory(
        name="ccna-lab", cpu_cores=2, memory_gb=4, storage_gb=10, grading_mode="manual", hold_for_review_hours=2
    )
    worker = WorkerFactory(name="worker-a", template=template, public_ip="10.0.0.5", cml_version="2.9.0")
    WorkerFactory(name="worker-b", template=template, status="STOPPED", desired_status="STOPPED")
    lab = LabRecordFactory(worker=worker, definition=definition, status="BOOTED", node_count=2)
    Port.objects.bulk_create(
        [
            Port(worker=worker, port=2001, lab_record=lab, name="edge-router_serial"),
            Port(worker=worker, port=2003, lab_record=lab, name="workstation_vnc"),
        ]
    )
    sessions = {
        status: make_session(status, definition=definition, worker=worker, owner=f"cand-{status.lower()}")
        for status in (
            "PENDING",
            "SCHEDULED",
            "INSTANTIATING",
            "READY",
            "RUNNING",
            "COLLECTING",
            "GRADING",
            "STOPPING",
            "STOPPED",
            "ARCHIVED",
            "TERMINATED",
            "EXPIRED",
        )  # fmt: skip
    }
    # The expired session's teardown is still pending, so it holds its capacity (SPEC §2.2).
    type(sessions["EXPIRED"]).objects.filter(pk=sessions["EXPIRED"].pk).update(cleanup_pending=True)
    type(sessions["STOPPED"]).objects.filter(pk=sessions["STOPPED"].pk).update(hold_until=soon(120))
    sessions["STOPPED"].refresh_from_db()
    return {"template": template, "definition": definition, "worker": worker, "lab": lab, "sessions": sessions}


def soon(minutes=5):
    return timezone.now() + timedelta(minutes=minutes)
