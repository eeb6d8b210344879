"""Transitions write what they change (not the whole row), in-place container changes included."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from lcm.fsm import changed_fields, snapshot
from sessions.services import session_transition
from tests.factories import SessionFactory

pytestmark = pytest.mark.django_db


def test_changed_fields_sees_assignments_and_in_place_container_changes():
    session = SessionFactory(allocated_ports={"a": 2000})
    before = snapshot(session)
    assert changed_fields(session, before) == ["updated_at"]
    session.allocated_ports["b"] = 2001  # mutated in place
    session.last_error = "boom"
    assert set(changed_fields(session, before)) == {"allocated_ports", "last_error", "updated_at"}


def test_a_transition_updates_only_the_columns_it_changes():
    session = SessionFactory(owner="someone@example.com")
    with CaptureQueriesContext(connection) as queries:
        moved = session_transition(session, "EXPIRED", actor="test", reason="check")
    update = next(q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "lablet_sessions"'))
    assert '"status"' in update and '"status_changed_at"' in update and '"updated_at"' in update
    assert '"owner"' not in update and '"definition_id"' not in update
    moved.refresh_from_db()
    assert moved.status == "EXPIRED" and moved.owner == "someone@example.com"
