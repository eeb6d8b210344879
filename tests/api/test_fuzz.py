"""Fuzzing every operation of the OpenAPI schema with schemathesis (SPEC §6.2: bad input never causes a 500).

The schema is the one `/api/schema/` serves (`test_schema.py` checks they are equal), built
at module level from drf-spectacular's generator so collection needs no database. Each
operation runs in positive and negative mode against the real Django stack (WSGI, in the
test's transaction) with an admin token and the internal key; path ids are mostly
swapped for ids of seeded objects in every state, so the happy paths and refusals are
exercised, not only 404s. Checks: no 5xx, documented status codes, content types,
headers, and bodies that match the schema.
"""

import os
import random
from collections import Counter, defaultdict

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from grading.models import GradingSession
from lcm.api.schema import openapi_document
from lcm.api.tokens import token_create
from sessions.states import SessionStatus
from tests.api.conftest import INTERNAL_KEY
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
from workers.states import LicenseStatus, WorkerStatus

pytestmark = pytest.mark.fuzz
MAX_EXAMPLES = int(os.environ.get("LCM_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "with-security-parameters": False},
        "phases": {
            "coverage": {"enabled": os.environ.get("LCM_FUZZ_COVERAGE", "1") == "1"},
            "stateful": {"enabled": False},
        },
    }
)


schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
# Requests go through Django's own WSGI handler, in-process.
schema.app = WSGIHandler()


# Operation ("METHOD path") → status code → responses; summarised by `pytest_terminal_summary` in conftest.py.
TALLY: dict[str, Counter] = defaultdict(Counter)


@pytest.fixture
def fuzz_world(db, django_user_model):
    """An admin token and objects in every state for the path ids to point at.

    Django's request signals would close the test's connection (and its transaction) at
    the end of each request; the test client disconnects them the same way.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    admin = django_user_model.objects.create_user("fuzz-admin", "fuzz@example.com", "pw", is_staff=True)
    key = token_create(admin, actor="test").key
    definitions = [DefinitionFactory(), DefinitionFactory(status="INACTIVE"), DefinitionFactory(grading_enabled=False)]
    TemplateFactory(name="fuzz-template")
    workers = [WorkerFactory(status=s) for s in (WorkerStatus.RUNNING, WorkerStatus.DRAINING, WorkerStatus.TERMINATED)]
    workers.append(WorkerFactory(status=WorkerStatus.RUNNING, license_status=LicenseStatus.REGISTERED))
    sessions = []
    for index, status in enumerate(SessionStatus.values):
        session = SessionFactory(
            definition=definitions[0] if index % 2 == 0 else definitions[2],
            status=status,
            worker=workers[0] if status not in (SessionStatus.PENDING,) else None,
            reservation_id=f"fuzz-{index}",
        )
        if status not in (SessionStatus.PENDING, SessionStatus.SCHEDULED, SessionStatus.INSTANTIATING):
            UserSessionFactory(lablet_session=session)
        if status in (SessionStatus.GRADING, SessionStatus.STOPPING, SessionStatus.STOPPED, SessionStatus.ARCHIVED):
            grading = GradingSessionFactory(lablet_session=session)
            ScoreReportFactory(lablet_session=session, grading_session=grading)
        sessions.append(session)
    LabRecordFactory(worker=workers[0], definition=definitions[0])
    yield {
        "headers": {"Authorization": f"Token {key}", "X-API-Key": INTERNAL_KEY},
        "ids": {
            "sessions": [str(s.pk) for s in sessions],
            "workers": [str(w.pk) for w in workers],
            "definitions": [str(d.pk) for d in definitions],
            "grading": [str(g.pk) for g in GradingSession.objects.all()],
        },
        "random": random.Random(5),
    }
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _point_at_seeded_objects(case, world):
    """Swap a generated (well-formed) `{id}` for a seeded object's id three times out of four."""
    generated = (case.path_parameters or {}).get("id")
    if not isinstance(generated, str) or len(generated) != 36 or world["random"].random() < 0.25:
        return
    pool = next(
        (ids for prefix, ids in world["ids"].items() if f"/{prefix}/" in case.path and prefix != "grading"), None
    )
    if pool:
        case.path_parameters["id"] = world["random"].choice(pool)


@pytest.mark.django_db
@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_operation(case, fuzz_world):
    _point_at_seeded_objects(case, fuzz_world)
    body = case.body if isinstance(case.body, dict) else None
    if body is not None and body.get("grading_session_id") and fuzz_world["random"].random() < 0.5:
        body["grading_session_id"] = fuzz_world["random"].choice(fuzz_world["ids"]["grading"])
    response = case.call_and_validate(headers=fuzz_world["headers"], checks=CHECKS)
    TALLY[case.operation.label][response.status_code] += 1
