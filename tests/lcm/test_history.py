"""The one history writer: `lcm.fsm.record_change`/`record_changes` stamp every row the same way."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from lcm.fsm import record_change, record_changes
from lcm.logging import request_id_var
from sessions.models import SessionStatusChange
from tests.factories import SessionFactory, WorkerFactory
from workers.models import WorkerStatusChange

pytestmark = pytest.mark.django_db


def test_a_row_names_its_actor_blanks_what_is_missing_and_carries_no_request_id_outside_one():
    worker = WorkerFactory()
    row = record_change(WorkerStatusChange, worker_id=worker.pk, field="status", to_status="PENDING", actor=None)
    row = WorkerStatusChange.objects.get(pk=row.pk)
    assert (row.field, row.from_status, row.to_status, row.actor, row.reason, row.request_id) == (
        "status", "", "PENDING", "system", "", ""
    )  # fmt: skip
    assert str(row) == "status ∅ → PENDING by system"


def test_rows_written_in_a_request_carry_its_id_and_a_user_by_name_in_one_insert():
    session = SessionFactory()
    user = get_user_model().objects.create_user("ada")
    token = request_id_var.set("req-42")
    try:
        with CaptureQueriesContext(connection) as queries:
            record_changes(
                SessionStatusChange,
                [
                    {"session_id": session.pk, "to_status": "SCHEDULED", "from_status": "PENDING", "actor": user},
                    {"session_id": session.pk, "entity": "user_session", "to_status": "PROVISIONING", "actor": "t",
                     "reason": "created"},
                ],
            )  # fmt: skip
    finally:
        request_id_var.reset(token)
    assert sum(q["sql"].startswith("INSERT") for q in queries.captured_queries) == 1
    rows = list(session.history.values_list("entity", "from_status", "to_status", "actor", "reason", "request_id"))
    assert rows == [
        ("session", "PENDING", "SCHEDULED", "ada", "", "req-42"),
        ("user_session", "", "PROVISIONING", "t", "created", "req-42"),
    ]
    assert record_changes(SessionStatusChange, []) == []
