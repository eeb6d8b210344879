"""The session, definition and template commands (SPEC §5.6): output, `--json`, and the error contract.

Every error is one line on stderr and exit 1 with nothing changed. Through `call_command`
an error is the `CommandError` Django would print as that line; the subprocess tests at
the end run `manage.py` for real to prove the line count and the exit code.
"""

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from grading.models import ScoreSection
from sessions.models import LabletDefinition, LabletSession, SessionStatusChange
from tests.factories import (
    DefinitionFactory,
    GradingSessionFactory,
    ScoreReportFactory,
    SessionFactory,
    TemplateFactory,
    UserSessionFactory,
    WorkerFactory,
)
from tests.support.commands import fails, manage, run, run_json
from workers.models import WorkerTemplate

ROOT = Path(__file__).resolve().parent.parent
DEMO_LAB_PATH = ROOT / "sessions" / "demo" / "demo-lab.yaml"
TEMPLATES_FILE = ROOT / "workers" / "templates.yaml"

SESSION_FIELDS = {
    "id", "definition_id", "definition_version", "owner", "reservation_id", "status", "timeslot_start",
    "timeslot_end", "worker_id", "cml_lab_id", "allocated_ports", "started_at", "ended_at", "end_reason",
    "grade_result", "created_at",
}  # fmt: skip


def iso(dt) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def snapshot() -> tuple:
    """What an error must not change: every session's status and the history length."""
    return (
        sorted(LabletSession.objects.values_list("id", "status", "reservation_id")),
        SessionStatusChange.objects.count(),
    )


# ---------------------------------------------------------------------------------------
# session_create
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_session_create_prints_the_new_pending_session():
    definition = DefinitionFactory()
    out = run("session_create", "--definition", str(definition.pk), "--owner", "alice", "--reason", "exam day")
    session = LabletSession.objects.get()
    assert out.startswith(f"Created session {session.pk} PENDING")
    assert "owner=alice" in out
    assert session.owner == "alice"
    assert session.status == "PENDING"
    change = session.history.get()
    assert (change.to_status, change.actor, change.reason) == ("PENDING", "command:session_create", "exam day")


@pytest.mark.django_db
def test_session_create_json_has_the_spec_fields():
    definition = DefinitionFactory(max_duration_minutes=90)
    start = (timezone.now() + timedelta(minutes=10)).replace(microsecond=0)
    end = start + timedelta(minutes=45)
    data = run_json(
        "session_create",
        "--definition", str(definition.pk),
        "--owner", "bob",
        "--start", start.isoformat(),
        "--end", end.isoformat(),
        "--reservation-id", "R-100",
    )  # fmt: skip
    assert set(data) >= SESSION_FIELDS
    session = LabletSession.objects.get()
    assert data["id"] == str(session.pk)
    assert data["definition_id"] == str(definition.pk)
    assert data["definition_version"] == "1.0.0"
    assert (data["owner"], data["reservation_id"], data["status"]) == ("bob", "R-100", "PENDING")
    assert data["timeslot_start"] == iso(start) and data["timeslot_start"].endswith("Z")
    assert data["timeslot_end"] == iso(end)
    assert data["worker_id"] is None and data["allocated_ports"] == {}


@pytest.mark.django_db
def test_session_create_accepts_a_definition_name_with_or_without_version():
    DefinitionFactory(name="ccna", version="1.0.0")
    newest = DefinitionFactory(name="ccna", version="1.10.0")
    DefinitionFactory(name="ccna", version="2.0.0", status="INACTIVE")
    by_name = run_json("session_create", "--definition", "ccna", "--owner", "a")
    assert by_name["definition_id"] == str(newest.pk)  # newest ACTIVE, compared as versions
    pinned = run_json("session_create", "--definition", "ccna:1.0.0", "--owner", "b")
    assert pinned["definition_version"] == "1.0.0"


@pytest.mark.django_db
def test_session_create_start_in_the_past_is_refused():
    definition = DefinitionFactory()
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    message = fails("session_create", "--definition", str(definition.pk), "--owner", "a", "--start", past)
    assert "timeslot_start" in message and "past" in message
    assert not LabletSession.objects.exists()


@pytest.mark.django_db
def test_session_create_end_before_start_is_refused():
    definition = DefinitionFactory()
    start = timezone.now() + timedelta(minutes=30)
    args = ("--start", start.isoformat(), "--end", (start - timedelta(minutes=5)).isoformat())
    message = fails("session_create", "--definition", str(definition.pk), "--owner", "a", *args)
    assert "timeslot_end" in message
    assert not LabletSession.objects.exists()


@pytest.mark.django_db
def test_session_create_longer_than_the_maximum_is_refused():
    definition = DefinitionFactory(max_duration_minutes=30)
    start = timezone.now() + timedelta(minutes=5)
    args = ("--start", start.isoformat(), "--end", (start + timedelta(minutes=31)).isoformat())
    assert "timeslot_end" in fails("session_create", "--definition", str(definition.pk), "--owner", "a", *args)
    assert not LabletSession.objects.exists()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--start", "tomorrow", "timeslot_start: 'tomorrow' is not an ISO 8601 date-time"),
        ("--start", "2030-13-45T00:00:00Z", "timeslot_start: '2030-13-45T00:00:00Z' is not an ISO 8601 date-time"),
        ("--start", "2030-01-01T09:00:00", "timeslot_start: must include a timezone"),
        ("--end", "2030-02-30T09:00:00Z", "timeslot_end: '2030-02-30T09:00:00Z' is not an ISO 8601 date-time"),
    ],
)
@pytest.mark.django_db
def test_session_create_bad_date_is_refused(option, value, expected):
    definition = DefinitionFactory()
    message = fails("session_create", "--definition", str(definition.pk), "--owner", "a", option, value)
    assert message.startswith(expected)
    assert not LabletSession.objects.exists()


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (str(uuid.uuid4()), "no definition with id"),
        ("no-such-lab", "no definition named 'no-such-lab'"),
        ("existing:9.9.9", "has no version 9.9.9"),
    ],
)
@pytest.mark.django_db
def test_session_create_unknown_definition_is_refused(reference, expected):
    DefinitionFactory(name="existing")
    assert expected in fails("session_create", "--definition", reference, "--owner", "a")
    assert not LabletSession.objects.exists()


@pytest.mark.django_db
def test_session_create_on_an_inactive_definition_is_refused():
    definition = DefinitionFactory(status="INACTIVE")
    message = fails("session_create", "--definition", str(definition.pk), "--owner", "a")
    assert message.startswith("definition_id:") and "INACTIVE" in message
    assert "INACTIVE" in fails("session_create", "--definition", definition.name, "--owner", "a")
    assert not LabletSession.objects.exists()


@pytest.mark.django_db
def test_session_create_duplicate_reservation_names_the_existing_session():
    definition = DefinitionFactory()
    existing = SessionFactory(definition=definition, reservation_id="R-1")
    before = snapshot()
    message = fails("session_create", "--definition", str(definition.pk), "--owner", "b", "--reservation-id", "R-1")
    assert str(existing.pk) in message
    assert snapshot() == before


@pytest.mark.django_db
def test_session_create_requires_definition_and_owner():
    assert "--owner" in fails("session_create", "--definition", "x")
    assert not LabletSession.objects.exists()


# ---------------------------------------------------------------------------------------
# session_list
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_session_list_prints_a_table():
    worker = WorkerFactory(name="w-east")
    first = SessionFactory(owner="alice", status="SCHEDULED", worker=worker)
    second = SessionFactory(owner="bob")
    lines = run("session_list").splitlines()
    assert lines[0].split() == ["ID", "STATUS", "OWNER", "DEFINITION", "START", "END", "WORKER"]
    assert len(lines) == 3
    assert lines[1].split()[:3] == [str(first.pk), "SCHEDULED", "alice"]
    assert "w-east" in lines[1]
    assert lines[2].split()[:3] == [str(second.pk), "PENDING", "bob"]


@pytest.mark.django_db
def test_session_list_json_is_an_array_of_sessions():
    session = SessionFactory(owner="alice")
    data = run_json("session_list")
    assert isinstance(data, list) and len(data) == 1
    assert set(data[0]) >= SESSION_FIELDS
    assert data[0]["id"] == str(session.pk)
    assert data[0]["timeslot_start"] == iso(session.timeslot_start)


@pytest.mark.django_db
def test_session_list_empty():
    assert run("session_list").strip() == "No sessions."
    assert run_json("session_list") == []


@pytest.mark.django_db
def test_session_list_filters():
    worker = WorkerFactory(name="w1")
    definition = DefinitionFactory(name="ccna")
    pending = SessionFactory(owner="alice", definition=definition)
    running = SessionFactory(owner="alice", status="RUNNING", worker=worker)
    ready = SessionFactory(owner="bob", status="READY", worker=worker)

    def ids(*args):
        return {row["id"] for row in run_json("session_list", *args)}

    assert ids("--status", "running,Ready") == {str(running.pk), str(ready.pk)}
    assert ids("--status", "pending") == {str(pending.pk)}
    assert ids("--owner", "alice") == {str(pending.pk), str(running.pk)}
    assert ids("--definition", str(definition.pk)) == {str(pending.pk)}
    assert ids("--definition", "ccna") == {str(pending.pk)}
    assert ids("--definition", "ccna:1.0.0") == {str(pending.pk)}
    assert ids("--worker", str(worker.pk)) == {str(running.pk), str(ready.pk)}
    assert ids("--worker", "w1", "--owner", "bob") == {str(ready.pk)}
    assert len(ids("--limit", "2")) == 2


@pytest.mark.django_db
def test_session_list_bad_input():
    assert "unknown status 'sleeping'" in fails("session_list", "--status", "running,sleeping")
    assert "--limit" in fails("session_list", "--limit", "0")
    assert "invalid int value" in fails("session_list", "--limit", "many")


# ---------------------------------------------------------------------------------------
# session_show
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_session_show_text_includes_fields_and_history():
    definition = DefinitionFactory()
    run("session_create", "--definition", str(definition.pk), "--owner", "alice")
    session = LabletSession.objects.get()
    out = run("session_show", str(session.pk))
    assert out.startswith(f"Session {session.pk}")
    assert "status: PENDING" in out and "owner: alice" in out
    assert "History:" in out and "-> PENDING" in out and "command:session_create" in out


@pytest.mark.django_db
def test_session_show_json_includes_history_and_children():
    session = SessionFactory(status="GRADING", grade_result="PASS")
    user_session = UserSessionFactory(lablet_session=session, devices=[{"label": "r1", "port": 2001}])
    grading = GradingSessionFactory(lablet_session=session, grading_session_id="ge-1")
    report = ScoreReportFactory(lablet_session=session, grading_session=grading)
    ScoreSection.objects.create(report=report, name="Routing", score=40, max_score=50)
    SessionStatusChange.objects.create(session=session, from_status="COLLECTING", to_status="GRADING", actor="t")

    data = run_json("session_show", str(session.pk))
    assert set(data) >= SESSION_FIELDS
    assert (data["id"], data["status"], data["grade_result"]) == (str(session.pk), "GRADING", "PASS")
    assert [(h["from_status"], h["to_status"]) for h in data["history"]] == [("COLLECTING", "GRADING")]
    assert data["user_session"]["id"] == str(user_session.pk)
    assert data["user_session"]["login_url"] == user_session.login_url
    assert data["user_session"]["devices"] == [{"label": "r1", "port": 2001}]
    assert data["grading_session"]["grading_session_id"] == "ge-1"
    assert data["score_report"]["score"] == 80 and data["score_report"]["passed"] is True
    assert data["score_report"]["sections"] == [
        {"name": "Routing", "score": 40, "max_score": 50, "weight": 1, "passed": None}
    ]
    text = run("session_show", str(session.pk))
    assert "User session:" in text and "Grading session:" in text and "section Routing: 40.0/50.0" in text


@pytest.mark.django_db
def test_session_show_without_children_has_nulls():
    session = SessionFactory()
    data = run_json("session_show", str(session.pk))
    assert data["user_session"] is None and data["grading_session"] is None and data["score_report"] is None
    assert data["history"] == []


@pytest.mark.django_db
def test_session_show_bad_ids():
    assert fails("session_show", "12345") == "'12345' is not a valid session id (expected a UUID)"
    missing = uuid.uuid4()
    assert fails("session_show", str(missing)) == f"no session with id {missing}"


# ---------------------------------------------------------------------------------------
# session_transition
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_session_transition_moves_the_session():
    session = SessionFactory(status="READY")
    out = run("session_transition", str(session.pk), "running", "--reason", "started by proctor")
    assert out.startswith(f"Session {session.pk} RUNNING")
    session.refresh_from_db()
    assert session.status == "RUNNING" and session.started_at is not None
    change = session.history.get()
    assert (change.from_status, change.to_status) == ("READY", "RUNNING")
    assert (change.actor, change.reason) == ("command:session_transition", "started by proctor")


@pytest.mark.django_db
def test_session_transition_json_and_expected_status():
    session = SessionFactory(status="RUNNING")
    data = run_json("session_transition", str(session.pk), "Collecting", "--expected", "running")
    assert set(data) >= SESSION_FIELDS
    assert (data["id"], data["status"]) == (str(session.pk), "COLLECTING")
    session.refresh_from_db()
    assert session.status == "COLLECTING"


@pytest.mark.django_db
def test_session_transition_refused_leaves_the_session_unchanged():
    session = SessionFactory()
    before = snapshot()
    message = fails("session_transition", str(session.pk), "RUNNING")
    assert message == "session cannot go from PENDING to RUNNING; allowed: EXPIRED, SCHEDULED, TERMINATED"
    assert snapshot() == before


@pytest.mark.django_db
def test_session_transition_expected_mismatch_is_refused():
    session = SessionFactory(status="READY")
    before = snapshot()
    assert "not RUNNING" in fails("session_transition", str(session.pk), "COLLECTING", "--expected", "RUNNING")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("sleeping",), "unknown status 'sleeping'"),
        (("running", "--expected", "nope"), "unknown status 'nope'"),
        (("TERMINATED",), "TERMINATED is not a manual target"),
        (("scheduled",), "SCHEDULED is not a manual target"),
    ],
)
@pytest.mark.django_db
def test_session_transition_bad_status_words(args, expected):
    session = SessionFactory(status="READY")
    before = snapshot()
    assert expected in fails("session_transition", str(session.pk), *args)
    assert snapshot() == before


@pytest.mark.django_db
def test_session_transition_bad_ids():
    assert "not a valid session id" in fails("session_transition", "abc", "RUNNING")
    assert "no session with id" in fails("session_transition", str(uuid.uuid4()), "RUNNING")


# ---------------------------------------------------------------------------------------
# session_extend
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_session_extend_adds_minutes_to_a_running_session():
    session = SessionFactory(status="RUNNING")
    before = session.timeslot_end
    out = run("session_extend", str(session.pk), "--minutes", "10", "--reason", "fire alarm")
    session.refresh_from_db()
    assert session.timeslot_end - before == timedelta(minutes=10) and out.startswith(f"Session {session.pk} RUNNING")
    change = session.history.get()
    assert change.actor == "command:session_extend" and "fire alarm" in change.reason
    data = run_json("session_extend", str(session.pk), "--to", iso(session.timeslot_end + timedelta(minutes=5)))
    assert data["timeslot_end"] == iso(session.timeslot_end + timedelta(minutes=5))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--minutes", "0"), "--minutes must be between 1 and 1440"),
        (("--to", "tomorrow"), "--to must be an ISO 8601 date-time with a time zone"),
        (("--minutes", "600"), "needs a reason"),
        ((), "one of the arguments --to --minutes is required"),
    ],
)
@pytest.mark.django_db
def test_session_extend_refuses_bad_input_and_changes_nothing(args, expected):
    session = SessionFactory(status="RUNNING")
    before = snapshot()
    assert expected in fails("session_extend", str(session.pk), *args)
    assert snapshot() == before


# ---------------------------------------------------------------------------------------
# session_terminate
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_session_terminate_then_again_is_refused():
    session = SessionFactory(status="RUNNING")
    out = run("session_terminate", str(session.pk), "--reason", "candidate left")
    assert out.startswith(f"Terminated session {session.pk} TERMINATED")
    session.refresh_from_db()
    assert (session.status, session.end_reason, session.end_reason_detail) == (
        "TERMINATED",
        "TERMINATED",
        "candidate left",
    )
    assert session.history.get().actor == "command:session_terminate"

    before = snapshot()
    assert fails("session_terminate", str(session.pk)) == (
        "session cannot go from TERMINATED to TERMINATED; allowed: none"
    )
    assert snapshot() == before


@pytest.mark.django_db
def test_session_terminate_json():
    session = SessionFactory()
    data = run_json("session_terminate", str(session.pk))
    assert set(data) >= SESSION_FIELDS
    assert (data["status"], data["end_reason"]) == ("TERMINATED", "TERMINATED")
    assert data["ended_at"].endswith("Z")


@pytest.mark.django_db
def test_session_terminate_bad_ids():
    assert "not a valid session id" in fails("session_terminate", "not-an-id")
    assert "no session with id" in fails("session_terminate", str(uuid.uuid4()))


# ---------------------------------------------------------------------------------------
# definition_import
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_definition_import_the_demo_lab():
    out = run(
        "definition_import", str(DEMO_LAB_PATH),
        "--name", "demo",
        "--cpu", "2", "--memory", "4", "--storage", "10",
        "--license-affinity", "enterprise,PERSONAL",
        "--max-duration", "90",
        "--form-qualified-name", "Exam-Demo-1.0",
        "--grading",
        "--description", "router and desktop",
    )  # fmt: skip
    definition = LabletDefinition.objects.get()
    assert out.startswith(f"Imported definition demo 1.0.0 ({definition.pk}) ACTIVE: 2 nodes")
    assert definition.node_count == 2
    assert definition.port_names == ["edge-router_serial", "workstation_serial", "workstation_vnc"]
    assert definition.lab_yaml == DEMO_LAB_PATH.read_text()
    assert definition.lab_artifact_uri == str(DEMO_LAB_PATH)
    assert definition.resource_requirements == {"cpu_cores": 2, "memory_gb": 4, "storage_gb": 10}
    assert definition.license_affinity == ["ENTERPRISE", "PERSONAL"]
    assert definition.max_duration_minutes == 90
    assert definition.grading_enabled and definition.form_qualified_name == "Exam-Demo-1.0"
    assert definition.description == "router and desktop"
    assert definition.created_by == "command:definition_import"


@pytest.mark.django_db
def test_definition_import_json_with_version():
    data = run_json("definition_import", str(DEMO_LAB_PATH), "--name", "demo", "--version", "2.1.0", "--no-grading")
    definition = LabletDefinition.objects.get()
    assert data["id"] == str(definition.pk)
    assert (data["name"], data["version"], data["status"]) == ("demo", "2.1.0", "ACTIVE")
    assert data["node_count"] == 2
    assert [p["name"] for p in data["port_template"]] == [
        "edge-router_serial",
        "workstation_serial",
        "workstation_vnc",
    ]
    assert data["grading_enabled"] is False
    assert data["resource_requirements"] == {"cpu_cores": 1, "memory_gb": 1, "storage_gb": 1}


@pytest.mark.django_db
def test_definition_import_broken_yaml_names_lab_yaml(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodes:\n  - id: n0\n    label: [unclosed\n")
    message = fails("definition_import", str(broken), "--name", "broken")
    assert message.startswith("lab_yaml:")
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db
def test_definition_import_topology_without_nodes(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("lab:\n  title: nothing\nnodes: []\n")
    assert fails("definition_import", str(empty), "--name", "empty").startswith("lab_yaml:")
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db
def test_definition_import_missing_or_unreadable_file(tmp_path):
    assert fails("definition_import", str(tmp_path / "nope.yaml"), "--name", "x") == (
        f"cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    )
    binary = tmp_path / "lab.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in fails("definition_import", str(binary), "--name", "x")
    assert "Is a directory" in fails("definition_import", str(tmp_path), "--name", "x")
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db
def test_definition_import_bad_fields():
    message = fails("definition_import", str(DEMO_LAB_PATH), "--name", "demo", "--cpu", "lots", "--version", "one")
    assert "cpu_cores: must be a whole number" in message and "version:" in message
    assert "license_affinity" in fails(
        "definition_import", str(DEMO_LAB_PATH), "--name", "demo", "--license-affinity", "GOLD"
    )
    assert "form_qualified_name" in fails("definition_import", str(DEMO_LAB_PATH), "--name", "demo", "--grading")
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db
def test_definition_import_same_version_twice_is_refused():
    run("definition_import", str(DEMO_LAB_PATH), "--name", "demo")
    message = fails("definition_import", str(DEMO_LAB_PATH), "--name", "demo")
    assert message == "version: demo 1.0.0 already exists; publish a new version"
    assert LabletDefinition.objects.count() == 1


# ---------------------------------------------------------------------------------------
# templates_sync
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_templates_sync_overwrites_an_edited_template():
    call_command("templates_sync", stdout=StringIO())  # the file's templates, whatever migrate seeded
    WorkerTemplate.objects.filter(name="cml-small").update(cpu_cores=1, description="edited in the DB")
    out = run("templates_sync")
    assert "updated: 1 (cml-small)" in out
    assert "unchanged: 3" in out
    small = WorkerTemplate.objects.get(name="cml-small")
    assert (small.cpu_cores, small.description) == (8, "Small CML worker for single-candidate labs")
    assert run_json("templates_sync") == {
        "file": str(TEMPLATES_FILE),
        "created": [],
        "updated": [],
        "unchanged": ["cml-small", "cml-medium", "cml-large", "cml-personal"],
    }


@pytest.mark.django_db
def test_templates_sync_from_another_file(tmp_path):
    TemplateFactory(name="cml-tiny", cpu_cores=2)
    path = tmp_path / "templates.yaml"
    path.write_text(
        "templates:\n"
        "  - {name: cml-tiny, instance_type: t3.large, ami_name_pattern: 'cml-*', cpu_cores: 4, memory_gb: 8,"
        " storage_gb: 50, max_nodes: 5}\n"
        "  - {name: cml-new, instance_type: t3.xlarge, ami_name_pattern: 'cml-*', cpu_cores: 8, memory_gb: 16,"
        " storage_gb: 50, max_nodes: 10, license_type: personal}\n"
    )
    data = run_json("templates_sync", "--file", str(path))
    assert data == {"file": str(path), "created": ["cml-new"], "updated": ["cml-tiny"], "unchanged": []}
    assert WorkerTemplate.objects.get(name="cml-tiny").cpu_cores == 4
    assert WorkerTemplate.objects.get(name="cml-new").license_type == "PERSONAL"


@pytest.mark.django_db
def test_templates_sync_bad_files_change_nothing(tmp_path):
    TemplateFactory(name="cml-small", cpu_cores=1)
    before = sorted(WorkerTemplate.objects.values_list("name", "cpu_cores"))
    missing = tmp_path / "missing.yaml"
    assert fails("templates_sync", "--file", str(missing)) == f"file: cannot read {missing}: No such file or directory"
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("templates: [\n")
    assert fails("templates_sync", "--file", str(invalid)) == f"file: {invalid} is not valid YAML"
    # One bad entry refuses the whole file: the good first entry is not applied either.
    half = tmp_path / "half.yaml"
    half.write_text(
        "templates:\n"
        "  - {name: cml-small, instance_type: m5, ami_name_pattern: 'cml-*', cpu_cores: 8, memory_gb: 32,"
        " storage_gb: 200, max_nodes: 20}\n"
        "  - {name: broken, instance_type: m5, ami_name_pattern: 'cml-*', cpu_cores: -1, memory_gb: 1,"
        " storage_gb: 1, max_nodes: 1}\n"
    )
    assert fails("templates_sync", "--file", str(half)).startswith("templates[1].cpu_cores:")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    assert "not UTF-8" in fails("templates_sync", "--file", str(binary))
    # An endless file is read only up to the limit (it used to be read whole: MemoryError on /dev/zero).
    assert fails("templates_sync", "--file", "/dev/zero") == "file: /dev/zero is larger than 1000000 characters"
    assert sorted(WorkerTemplate.objects.values_list("name", "cpu_cores")) == before


# ---------------------------------------------------------------------------------------
# Real `manage.py` processes: exit code 1 and exactly one stderr line
# ---------------------------------------------------------------------------------------


def assert_one_line_error(result, contains: str) -> str:
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("CommandError: ") and contains in lines[0]
    return lines[0]


@pytest.mark.django_db(transaction=True)
def test_manage_py_refused_transition_is_one_line_and_exit_1():
    session = SessionFactory()
    result = manage("session_transition", str(session.pk), "running")
    assert_one_line_error(result, "session cannot go from PENDING to RUNNING")
    session.refresh_from_db()
    assert session.status == "PENDING"
    assert not session.history.exists()


@pytest.mark.django_db(transaction=True)
def test_manage_py_duplicate_reservation_names_the_existing_session():
    existing = SessionFactory(reservation_id="R-7")
    definition = str(existing.definition_id)
    result = manage("session_create", "--definition", definition, "--owner", "x", "--reservation-id", "R-7")
    assert_one_line_error(result, str(existing.pk))
    assert LabletSession.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (("session_show", "not-a-uuid"), "not a valid session id"),
        (("session_terminate", "00000000-0000-0000-0000-000000000000"), "no session with id"),
        (("session_list", "--limit", "lots"), "invalid int value"),
        (("definition_import", "/no/such/lab.yaml", "--name", "x"), "cannot read /no/such/lab.yaml"),
        (("templates_sync", "--file", "/no/such/templates.yaml"), "cannot read /no/such/templates.yaml"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_manage_py_errors_are_one_line(args, contains):
    assert_one_line_error(manage(*args), contains)


@pytest.mark.django_db(transaction=True)
def test_manage_py_json_output_is_only_json():
    definition = DefinitionFactory()
    result = manage("session_create", "--definition", definition.name, "--owner", "alice", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "PENDING" and data["owner"] == "alice"
    assert LabletSession.objects.get().pk == uuid.UUID(data["id"])
    listed = manage("session_list", "--json")
    assert [row["id"] for row in json.loads(listed.stdout)] == [data["id"]]


@pytest.mark.parametrize("command", [("session_list",), ("exam_show", "1"), ("bench_pages", "--pages", "1")])
def test_a_database_missing_or_not_migrated_is_one_line_not_a_traceback(tmp_path, command):
    def manage_with(database_url):
        env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "lcm.settings"}
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(
            [sys.executable, str(root / "manage.py"), *command],
            cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    missing = manage_with("postgres://postgres@127.0.0.1:5432/lcm_no_such_database_here")
    assert_one_line_error(missing, "cannot use the database (check DATABASE_URL)")
    empty = manage_with(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert_one_line_error(empty, "the database is not migrated (run manage.py migrate)")
