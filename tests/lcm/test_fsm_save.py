"""Transitions write what they change (not the whole row), in-place container changes included."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from lcm.fsm import InvalidTransition, changed_fields, snapshot
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


def test_a_lab_passes_through_steps_in_one_write_each_step_an_fsm_move(monkeypatch):
    from tests.factories import LabRecordFactory
    from workers.services import lab_record_transition

    announced = []
    monkeypatch.setattr("workers.services.publish_change", lambda *a, **k: announced.append(a[2:4]))
    lab = LabRecordFactory(status="DEFINED")
    with CaptureQueriesContext(connection) as queries:
        lab = lab_record_transition(lab, "BOOTED", via=["STARTING"], actor="test", cml_state="STARTED")
    assert lab.status == "BOOTED" and lab.cml_state == "STARTED"
    assert sum(q["sql"].startswith('UPDATE "lab_records"') for q in queries.captured_queries) == 1
    assert announced == [("DEFINED", "STARTING"), ("STARTING", "BOOTED")]
    with pytest.raises(InvalidTransition):
        lab_record_transition(lab, "WIPED", via=["IMPORTING"], actor="test")  # not a path the table allows
    lab.refresh_from_db()
    assert lab.status == "BOOTED"
