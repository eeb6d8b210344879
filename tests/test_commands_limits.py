"""Commands against hostile input (issue 18, SPEC §5.6): unbounded files, numbers out of range and
terminal escape codes end in one line and exit 1 with nothing changed, or print escaped text."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from lcm.management.command_utils import fail, printable
from sessions.api.serializers import MAX_LAB_YAML
from sessions.models import LabletDefinition, LabletSession
from tests.factories import DefinitionFactory, SessionFactory, TemplateFactory, WorkerFactory
from tests.support.commands import fails, manage, run, run_json
from workers.models import CMLWorker

ESCAPE = "\x1b[31m"
HUGE = "99999999999999999999"

# ---------------------------------------------------------------------------------------
# Unbounded reads
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_definition_import_refuses_an_endless_file():
    message = fails("definition_import", "/dev/zero", "--name", "endless")
    assert f"larger than {MAX_LAB_YAML}" in message
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db
def test_definition_import_refuses_a_file_just_over_the_maximum(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("#" * (MAX_LAB_YAML + 1))
    assert f"larger than {MAX_LAB_YAML}" in fails("definition_import", str(path), "--name", "big")
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_manage_py_definition_import_dev_zero_is_one_line_and_exit_1():
    result = manage("definition_import", "/dev/zero", "--name", "endless")
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("CommandError: ")
    assert not LabletDefinition.objects.exists()


# ---------------------------------------------------------------------------------------
# Numbers and dates out of range
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("value", [HUGE, "-1", "1e3", ""])
def test_session_list_limit_out_of_range_is_one_line(value):
    assert "--limit" in fails("session_list", "--limit", value)


@pytest.mark.django_db
def test_session_list_limit_at_the_maximum_still_lists():
    session = SessionFactory()
    assert [row["id"] for row in run_json("session_list", "--limit", "100000")] == [str(session.pk)]


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["--start", "--end"])
def test_session_create_date_at_the_end_of_time_is_one_line(option):
    definition = DefinitionFactory()
    message = fails(
        "session_create", "--definition", str(definition.pk), "--owner", "a", option, "9999-12-31T23:59:00Z"
    )
    assert "timeslot" in message
    assert not LabletSession.objects.exists()


@pytest.mark.django_db
def test_worker_drain_timeout_out_of_range_is_one_line():
    worker = WorkerFactory(status="RUNNING")
    assert "--timeout-minutes" in fails("worker_drain", worker.name, "--timeout-minutes", HUGE)
    worker.refresh_from_db()
    assert worker.status == "RUNNING"


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["--cpu-cores", "--memory-gb", "--storage-gb", "--max-nodes"])
def test_worker_add_capacity_out_of_range_is_one_line(option):
    template = TemplateFactory()
    count = CMLWorker.objects.count()
    assert option in fails("worker_add", "--template", template.name, option, HUGE)
    assert CMLWorker.objects.count() == count


@pytest.mark.parametrize(
    "args",
    [
        ("session_list", "--limit", HUGE),
        ("worker_drain", "some-worker", "--timeout-minutes", HUGE),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_manage_py_numbers_out_of_range_are_one_line_and_exit_1(args):
    WorkerFactory(name="some-worker", status="RUNNING")
    result = manage(*args)
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("CommandError: ")


# ---------------------------------------------------------------------------------------
# Terminal escape codes in stored text
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_session_show_escapes_control_characters_in_text():
    session = SessionFactory(owner=f"{ESCAPE}mallory\nforged: line\x07")
    out = run("session_show", str(session.pk))
    assert "\x1b" not in out and "\x07" not in out
    assert "owner: \\x1b[31mmallory\\nforged: line\\x07" in out
    assert "\nforged" not in out


@pytest.mark.django_db
def test_session_show_json_keeps_the_text_exact():
    session = SessionFactory(owner=f"{ESCAPE}mallory")
    out = run("session_show", str(session.pk), "--json")
    assert "\x1b" not in out
    assert json.loads(out)["owner"] == f"{ESCAPE}mallory"


@pytest.mark.django_db
def test_session_list_escapes_control_characters_and_keeps_the_columns():
    session = SessionFactory(owner=f"{ESCAPE}mallory", timeslot_start=timezone.now() + timedelta(hours=1))
    lines = run("session_list").splitlines()
    assert "\x1b" not in "".join(lines)
    assert "\\x1b[31mmallory" in lines[1]
    assert lines[0].index("DEFINITION") == lines[1].index(session.definition.name)


@pytest.mark.django_db
def test_session_create_text_escapes_the_owner():
    definition = DefinitionFactory()
    out = run("session_create", "--definition", str(definition.pk), "--owner", f"{ESCAPE}eve")
    assert "\x1b" not in out and "owner=\\x1b[31meve" in out
    assert LabletSession.objects.get().owner == f"{ESCAPE}eve"


def test_error_messages_are_one_printable_line():
    assert str(fail(f"no owner {ESCAPE}x\n  y\x07")) == "no owner \\x1b[31mx y\\x07"


def test_printable_escapes_control_characters_only():
    assert printable("café → ok\t\x00\x9b") == "café → ok\\t\\x00\\x9b"
    assert printable("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"


@pytest.mark.django_db
def test_worker_list_escapes_control_characters():
    WorkerFactory(name=f"w{ESCAPE}1")
    out = run("worker_list")
    assert "\x1b" not in out and "w\\x1b[31m1" in out


@pytest.mark.django_db
def test_any_command_text_output_escapes_control_characters():
    """`worker_drain` builds its line without `printable`: LCM commands' stdout escapes it anyway."""
    worker = WorkerFactory(name=f"w{ESCAPE}2", status="RUNNING")
    out = run("worker_drain", str(worker.pk))
    assert "\x1b" not in out and out.startswith("w\\x1b[31m2 DRAINING")
