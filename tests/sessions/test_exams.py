"""Exam services (SPEC §8) and the capacity check (SPEC §10): roster parsing, all-or-nothing booking, admission,
bulk actions and the reads. The loop-driven acceptance is tests/loops/test_exams_loops.py."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling.admission import CapacityRefused, capacity_check
from sessions.exams import exam_action, exam_book, exam_counts, exam_roster, parse_roster, results_csv
from sessions.models import Exam, LabletDefinition, LabletSession, SessionStatusChange
from tests.factories import DefinitionFactory, SessionFactory, TemplateFactory, WorkerFactory
from workers.models import SystemSettings, WorkerStatusChange

pytestmark = pytest.mark.django_db


def _slot(hours=2, minutes=60):
    start = (timezone.now() + timedelta(hours=hours)).replace(second=0, microsecond=0)
    return start, start + timedelta(minutes=minutes)


def _roster(n, prefix="cand"):
    return [{"owner": f"{prefix}{i}@example.com", "reservation_id": f"{prefix}-r{i}"} for i in range(n)]


def _admission(mode="refuse", **fields):
    SystemSettings.objects.update_or_create(pk=1, defaults={"admission": mode, **fields})


# --- parse_roster ---------------------------------------------------------------------------------


def test_a_roster_with_a_header_names_its_columns_in_any_order():
    candidates, errors = parse_roster("reservation_id,Owner\nR1, alice@example.com \n\nR2,bob\n")
    assert errors == {}
    assert candidates == [
        {"owner": "alice@example.com", "reservation_id": "R1"},
        {"owner": "bob", "reservation_id": "R2"},
    ]


def test_a_bare_list_of_owners_is_a_roster_too():
    candidates, errors = parse_roster("alice\nbob,R-2\ncarol\n")
    assert errors == {}
    assert [c["owner"] for c in candidates] == ["alice", "bob", "carol"]
    assert [c["reservation_id"] for c in candidates] == [None, "R-2", None]


def test_roster_errors_name_the_rows_as_the_user_counts_them():
    lines = ["owner,reservation_id"] + [f"c{i},R{i}" for i in range(1, 11)]
    lines[4] = ",R4"  # row 4: blank owner
    lines[9] = "c9,R2"  # row 9: the reservation id of row 2
    candidates, errors = parse_roster("\n".join(lines))
    assert set(errors) == {"candidates[3].owner", "candidates[8].reservation_id"}
    assert errors["candidates[3].owner"] == ["row 4: owner is required"]
    assert "row 9" in errors["candidates[8].reservation_id"][0] and "row 2" in errors["candidates[8].reservation_id"][0]


def test_roster_limits_and_bad_characters():
    assert "roster" in parse_roster("x" * 200_001)[1]
    assert "roster" in parse_roster("\n".join(f"c{i}" for i in range(1001)))[1]
    assert "roster" in parse_roster("owner,email\nbob,b@x\n")[1]
    assert "roster" in parse_roster("\n\n")[1]
    _, errors = parse_roster("ok\nbad\x07bell\n" + "y" * 201)
    assert set(errors) == {"candidates[1].owner", "candidates[2].owner"}
    assert "row 3" in errors["candidates[2].owner"][0]
    _, errors = parse_roster("bob\nbob\n")
    assert "already on row 1" in errors["candidates[1].owner"][0]


# --- capacity_check ------------------------------------------------------------------------------


def test_the_check_counts_the_fleet_and_what_is_booked_over_the_window():
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    for _ in range(3):
        WorkerFactory(cpu_cores=16, memory_gb=64)  # 48 CPU: 24 sessions
    start, end = _slot()
    verdict = capacity_check(definition, start, end, 20)
    assert verdict.fits and verdict.available["cpu"] == 48 and verdict.needed["cpu"] == 40
    assert verdict.available["sessions"] == 24 and verdict.needed["sessions"] == 20

    for _ in range(10):  # booked earlier, overlapping through the boot lead and teardown
        SessionFactory(
            definition=definition,
            timeslot_start=start - timedelta(minutes=30),
            timeslot_end=start + timedelta(minutes=5),
        )
    verdict = capacity_check(definition, start, end, 20)
    assert not verdict.fits
    assert verdict.needed["cpu"] == 60 and verdict.available["cpu"] == 48
    assert verdict.shortfall == {"cpu": 12, "sessions": 6}
    assert any(r.startswith("needs 60 CPU at") and "the fleet has 48; autoscaling is off" in r for r in verdict.reasons)

    later = capacity_check(definition, start + timedelta(hours=3), end + timedelta(hours=3), 20)
    assert later.fits  # the earlier ones are gone by then


def test_an_empty_fleet_refuses_and_says_why():
    verdict = capacity_check(DefinitionFactory(), *_slot(), 1)
    assert not verdict.fits and verdict.available["cpu"] == 0
    assert "no worker can take" in verdict.reasons[0] and "autoscaling is off" in verdict.reasons[0]


def test_autoscaling_counts_the_room_under_the_regional_maximum():
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4, license_affinity=["ENTERPRISE"])
    WorkerFactory(cpu_cores=16, memory_gb=64, region="us-east-1")
    template = TemplateFactory(name="exam-medium", cpu_cores=16, memory_gb=64, region="us-east-1")
    start, end = _slot()
    assert not capacity_check(definition, start, end, 80).fits
    _admission(autoscaling_enabled=True, max_workers_per_region=10, default_worker_template=template)
    verdict = capacity_check(definition, start, end, 80)
    assert verdict.fits and verdict.available["cpu"] == 160, verdict.reasons
    assert "up to 9 more exam-medium" in verdict.reasons[0]
    _admission(autoscaling_enabled=True, max_workers_per_region=3, default_worker_template=template)
    verdict = capacity_check(definition, start, end, 80)
    assert not verdict.fits and verdict.available["cpu"] == 48


def test_workers_that_cannot_take_the_definition_are_not_counted():
    definition = DefinitionFactory(license_affinity=["EVALUATION"])
    WorkerFactory(license_type="ENTERPRISE")
    verdict = capacity_check(definition, *_slot(), 1)
    assert not verdict.fits and "licence ENTERPRISE does not serve EVALUATION" in verdict.reasons[0]


def test_personal_workers_hold_one_session_each():
    definition = DefinitionFactory(cpu_cores=1, memory_gb=1, license_affinity=["PERSONAL"])
    for _ in range(3):
        WorkerFactory(license_type="PERSONAL")
    verdict = capacity_check(definition, *_slot(), 4)
    assert not verdict.fits and verdict.shortfall == {"sessions": 1}
    assert verdict.available["sessions"] == 3


def test_workers_lcm_paused_count_and_workers_an_admin_drains_or_stops_do_not():
    """The autoscaler starts a worker LCM itself paused (idle) or drained again on demand; an admin's drain or stop
    is the admin's decision, so that capacity is not counted."""
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    paused = WorkerFactory(status="STOPPED", desired_status="STOPPED", cpu_cores=16)
    WorkerStatusChange.objects.create(worker=paused, field="desired_status", to_status="STOPPED", actor="idle-detector")
    stopped = WorkerFactory(status="STOPPED", desired_status="STOPPED", cpu_cores=16)
    WorkerStatusChange.objects.create(worker=stopped, field="desired_status", to_status="STOPPED", actor="admin")
    drained = WorkerFactory(status="DRAINING", cpu_cores=16)
    WorkerStatusChange.objects.create(worker=drained, field="status", to_status="DRAINING", actor="admin")
    WorkerFactory(status="STARTING", cpu_cores=16)  # on its way: counted
    WorkerFactory(status="RUNNING", desired_status="TERMINATED", cpu_cores=16)  # going away: not counted
    verdict = capacity_check(definition, *_slot(), 1)
    assert verdict.available["cpu"] == 32, verdict


# --- exam_book ------------------------------------------------------------------------------------


def test_an_exam_books_every_candidate_in_one_step_with_history():
    _admission("refuse")
    definition = DefinitionFactory(cpu_cores=1, memory_gb=1)
    WorkerFactory()
    start, end = _slot()
    booking = exam_book(
        name="Networking 101", definition=definition, timeslot_start=start, timeslot_end=end,
        candidates=_roster(12), actor="instructor",
    )  # fmt: skip
    assert booking.verdict.fits
    assert len(booking.sessions) == 12 and booking.exam.sessions.count() == 12
    session = LabletSession.objects.get(reservation_id="cand-r3")
    assert (session.status, session.exam_id, session.timeslot_start, session.created_by) == (
        "PENDING", booking.exam.pk, start, "instructor"
    )  # fmt: skip
    change = session.history.get()
    assert (change.to_status, change.actor) == ("PENDING", "instructor")
    assert exam_counts(booking.exam)["PENDING"] == 12


def test_bad_rows_book_nothing_and_name_the_rows():
    definition = DefinitionFactory()
    SessionFactory(definition=definition, reservation_id="taken")
    roster = _roster(10)
    roster[3]["owner"] = "  "
    roster[8]["reservation_id"] = roster[1]["reservation_id"]
    roster[5]["reservation_id"] = "taken"
    with pytest.raises(ValidationError) as refused:
        exam_book(name="x", definition=definition, timeslot_start=None, timeslot_end=None, candidates=roster, actor="t")
    errors = refused.value.message_dict
    assert errors["candidates[3].owner"] == ["row 4: owner is required"]
    assert "row 9" in errors["candidates[8].reservation_id"][0]
    assert Exam.objects.count() == 0 and LabletSession.objects.count() == 1


def test_already_booked_reservations_are_named():
    definition = DefinitionFactory()
    existing = SessionFactory(definition=definition, reservation_id="taken")
    roster = _roster(3)
    roster[2]["reservation_id"] = "taken"
    with pytest.raises(ValidationError) as refused:
        exam_book(name="x", definition=definition, timeslot_start=None, timeslot_end=None, candidates=roster, actor="t")
    assert str(existing.pk) in refused.value.message_dict["candidates[2].reservation_id"][0]


def test_refuse_books_nothing_and_warn_books_with_the_verdict():
    _admission("refuse")
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    WorkerFactory(cpu_cores=16, memory_gb=64)
    start, end = _slot()
    kwargs = {"name": "Big", "definition": definition, "timeslot_start": start, "timeslot_end": end, "actor": "t"}
    with pytest.raises(CapacityRefused) as refused:
        exam_book(candidates=_roster(20), **kwargs)
    assert refused.value.verdict.shortfall["cpu"] == 24
    assert refused.value.extra["capacity"]["shortfall"]["sessions"] == 12
    assert not Exam.objects.exists() and not LabletSession.objects.exists()

    booking = exam_book(candidates=_roster(20), on_capacity="warn", **kwargs)
    assert len(booking.sessions) == 20 and not booking.verdict.fits
    assert any("needs 40 CPU" in reason for reason in booking.verdict.reasons)

    _admission("off")
    assert exam_book(candidates=_roster(5, "more"), **kwargs).verdict is None


def test_bulk_actions_go_through_each_sessions_service():
    definition = DefinitionFactory(max_duration_minutes=60)
    start, end = _slot(minutes=50)
    booking = exam_book(
        name="x", definition=definition, timeslot_start=start, timeslot_end=end, candidates=_roster(3), actor="t"
    )
    LabletSession.objects.filter(pk=booking.sessions[0].pk).update(status="ARCHIVED")

    results = exam_action(booking.exam, "extend", minutes=10, actor="proctor", reason="fire alarm")
    assert [r.result for r in results] == ["refused", "ok", "ok"]
    assert "ARCHIVED" in results[0].detail
    assert LabletSession.objects.filter(timeslot_end=end + timedelta(minutes=10)).count() == 2
    assert Exam.objects.get().timeslot_end == end + timedelta(minutes=10)  # the exam ends with its latest session
    assert SessionStatusChange.objects.filter(actor="proctor", reason__contains="fire alarm").count() == 2

    results = exam_action(booking.exam, "extend", minutes=31, actor="proctor")
    assert {r.result for r in results} == {"refused"} and "at most" in results[1].detail  # the ceiling

    results = exam_action(booking.exam, "start", actor="proctor")
    assert {r.result for r in results} == {"refused"}
    results = exam_action(booking.exam, "terminate", actor="proctor")
    assert [r.result for r in results] == ["refused", "ok", "ok"]
    assert exam_counts(booking.exam)["TERMINATED"] == 2
    with pytest.raises(ValidationError):
        exam_action(booking.exam, "extend", actor="p")
    with pytest.raises(ValidationError):
        exam_action(booking.exam, "dance", actor="p")


def test_roster_and_results_cost_two_queries_whatever_the_size():
    definition = DefinitionFactory()
    small = exam_book(
        name="s", definition=definition, timeslot_start=None, timeslot_end=None, candidates=_roster(3, "a"), actor="t"
    )
    large = exam_book(
        name="l", definition=definition, timeslot_start=None, timeslot_end=None, candidates=_roster(60, "b"), actor="t"
    )
    counts = []
    for booking in (small, large):
        with CaptureQueriesContext(connection) as queries:
            rows = exam_roster(booking.exam)
        counts.append(len(queries))
        assert len(rows) == len(booking.sessions)
    assert counts[0] == counts[1] == 2
    LabletSession.objects.filter(owner="=cmd|calc").delete()
    text = results_csv(small.exam)
    lines = text.strip().splitlines()
    assert lines[0] == "owner,reservation_id,session_id,status,score,max_score,percent,result,started_at,ended_at"
    assert len(lines) == 4 and lines[1].startswith("a0@example.com,a-r0,")


def test_the_embedded_demo_fleet_takes_an_exam_of_25_beside_its_demo_bookings():
    from sessions.seed import DEMO_DEFINITION, seed_demo  # Imported here: only this test seeds the demo.

    _admission("refuse")
    seed_demo()
    definition = LabletDefinition.objects.get(name=DEMO_DEFINITION)
    booking = exam_book(
        name="Demo class", definition=definition, timeslot_start=None, timeslot_end=None,
        candidates=_roster(25), actor="instructor",
    )  # fmt: skip
    assert booking.verdict.fits and len(booking.sessions) == 25
    assert booking.verdict.available["sessions"] >= 48 - 25 - 4
