"""The exam commands (SPEC §8, §5.6): exam_book with a CSV roster, exam_show --json, exam_action; bad input is one
line on stderr and exit 1 with nothing booked or changed."""

from datetime import UTC, timedelta

import pytest
from django.utils import timezone

from sessions.models import Exam, LabletSession
from tests.factories import DefinitionFactory, WorkerFactory
from tests.support.commands import fails, manage, run, run_json
from workers.models import SystemSettings


def _iso(dt) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _slot(minutes=60):
    start = (timezone.now() + timedelta(hours=2)).replace(second=0, microsecond=0)
    return _iso(start), _iso(start + timedelta(minutes=minutes))


@pytest.fixture
def roster(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text("owner,reservation_id\n" + "".join(f"c{i}@example.com,R{i}\n" for i in range(5)))
    return path


def _book(definition, roster, *extra):
    start, end = _slot()
    return ("exam_book", "--name", "Networking 101", "--definition", str(definition.pk), "--start", start, "--end", end,
            "--roster", str(roster), *extra)  # fmt: skip


@pytest.mark.django_db
def test_exam_book_show_and_action(roster):
    definition = DefinitionFactory(max_duration_minutes=60)
    out = run(*_book(definition, roster))
    exam = Exam.objects.get()
    assert out.startswith(f"Booked exam {exam.pk} 'Networking 101': 5 sessions")
    assert LabletSession.objects.filter(exam=exam, status="PENDING").count() == 5

    data = run_json("exam_show", str(exam.pk))
    assert data["counts"] == {"PENDING": 5} and len(data["sessions"]) == 5
    assert data["sessions"][0]["owner"] == "c0@example.com" and data["sessions"][0]["reservation_id"] == "R0"
    assert "PENDING=5" in run("exam_show", str(exam.pk))

    out = run("exam_action", str(exam.pk), "extend", "--minutes", "10", "--reason", "late start")
    assert out.startswith("extend: 5 ok, 0 refused")
    assert LabletSession.objects.filter(timeslot_end=exam.timeslot_end + timedelta(minutes=10)).count() == 5
    result = run_json("exam_action", str(exam.pk), "start")
    assert result["counts"] == {"ok": 0, "refused": 5}
    out = run("exam_action", str(exam.pk), "terminate")
    assert out.startswith("terminate: 5 ok") and LabletSession.objects.filter(status="TERMINATED").count() == 5


@pytest.mark.django_db
def test_exam_book_json_and_the_capacity_refusal(roster):
    SystemSettings.objects.update_or_create(pk=1, defaults={"admission": "refuse"})
    definition = DefinitionFactory(cpu_cores=4, memory_gb=4)
    WorkerFactory(cpu_cores=16, memory_gb=64)
    message = fails(*_book(definition, roster))
    assert "cannot hold" in message and "needs 20 CPU" in message
    assert not Exam.objects.exists()
    data = run_json(*_book(definition, roster, "--warn"))
    assert len(data["session_ids"]) == 5 and data["capacity"]["fits"] is False
    assert data["capacity"]["shortfall"]["cpu"] == 4


@pytest.mark.django_db
def test_bad_input_is_one_line_and_books_nothing(tmp_path, roster):
    definition = DefinitionFactory()
    bad = tmp_path / "bad.csv"
    bad.write_text("owner,reservation_id\na,R1\nb,R2\nc,R3\n,R4\n")
    assert fails(*_book(definition, bad)).endswith("row 4: owner is required")
    assert "cannot read" in fails(*_book(definition, tmp_path / "missing.csv"))
    assert "no definition" in fails("exam_book", "--name", "x", "--definition", "nope", "--start", "x",
                                    "--roster", str(roster))  # fmt: skip
    start, _ = _slot()
    assert "timeslot_start" in fails("exam_book", "--name", "x", "--definition", str(definition.pk), "--start",
                                     "yesterday", "--roster", str(roster))  # fmt: skip
    assert "no exam with id" in fails("exam_show", "12345")
    assert "no exam with id" in fails("exam_action", "12345", "start")
    assert not Exam.objects.exists() and not LabletSession.objects.exists()
    exam_id = run_json(*_book(definition, roster))["exam"]["id"]
    assert "minutes" in fails("exam_action", str(exam_id), "extend")


@pytest.mark.django_db(transaction=True)
def test_manage_py_exam_commands_exit_1_with_one_line(roster):
    done = manage("exam_book", "--name", "x", "--definition", "nope", "--start", "x", "--roster", str(roster))
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "no definition" in done.stderr
    done = manage("exam_action", "1", "dance")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    done = manage("exam_show", "0")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    definition = DefinitionFactory()
    done = manage(
        "exam_book", "--name", "x", "--definition", str(definition.pk), "--start", "x", "--roster", "/dev/zero"
    )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and "larger than" in done.stderr


@pytest.mark.django_db
def test_bench_exam_prints_the_exam_beside_single_bookings_and_leaves_nothing():
    out = run("bench_exam", "--candidates", "20", "--booked", "60", "--workers", "3")
    assert "exam_book (check included)" in out and "20 × session_create (peer)" in out and "ms/booking" in out
    data = run_json("bench_exam", "--candidates", "5", "--booked", "0", "--workers", "1")
    assert data["exam_book"]["fits"] is True and data["single_bookings"]["queries"] > data["exam_book"]["queries"]
    assert not LabletSession.objects.exists() and not Exam.objects.exists()
    assert "--candidates" in fails("bench_exam", "--candidates", "0")


@pytest.mark.django_db
def test_session_create_is_admitted_too():
    SystemSettings.objects.update_or_create(pk=1, defaults={"admission": "refuse"})
    definition = DefinitionFactory()
    assert "no worker can take" in fails("session_create", "--definition", str(definition.pk), "--owner", "a")
    assert not LabletSession.objects.exists()
    out = run("session_create", "--definition", str(definition.pk), "--owner", "a", "--warn")
    assert out.startswith("Created session") and "warning: no worker can take" in out
