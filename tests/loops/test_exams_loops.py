"""An exam through the real loops and simulators (SPEC §8, issue 14's acceptance): booked over REST on a demo-like
fleet, every session READY by itself, started, extended (LCM's end and LDS's), finished, graded, exported; the
capacity refusal on the same fleet, the warning, and autoscaling's room."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from lcm.roles import INSTRUCTOR_GROUP
from sessions.candidate import lds_end_of
from sessions.clients.lds import lds_client
from sessions.exams import exam_action, exam_book, results_csv
from sessions.models import Exam, LabletSession
from tests.factories import DefinitionFactory, TemplateFactory
from tests.support.loops import drive
from tests.support.simulators import sim_control
from workers.models import LabRecord, Port, SystemSettings

pytestmark = pytest.mark.django_db(transaction=True)

ROSTER = 25


@pytest.fixture
def proctor(django_user_model):
    # Imported here, as tests/loops/test_exam_time.py does: the API tests' conftest is loaded by pytest for them.
    from tests.api.conftest import client_for

    user = django_user_model.objects.create_user("proctor", "p@example.com", "proctor-pass")
    user.groups.add(Group.objects.get_or_create(name=INSTRUCTOR_GROUP)[0])
    return client_for(user)


@pytest.fixture
def demo_fleet(sim_worker):
    """Three RUNNING cml-medium-sized workers backed by the CML simulator, as the embedded default seeds."""
    return [sim_worker(f"demo-{i}") for i in (1, 2, 3)]


def _statuses(exam) -> list[str]:
    return list(LabletSession.objects.filter(exam=exam).values_list("status", flat=True))


def _lds_ends(exam) -> dict:
    client = lds_client()
    return {
        s.pk: lds_end_of(client.get_session(s.user_session.lds_session_id))
        for s in LabletSession.objects.filter(exam=exam).prefetch_related("user_sessions")
    }


def _body(definition, n, prefix="cand", **extra):
    start = timezone.now().replace(microsecond=0)
    return {
        "name": "Networking 101", "definition_id": str(definition.pk), "timeslot_start": start.isoformat(),
        "timeslot_end": (start + timedelta(minutes=30)).isoformat(),
        "candidates": [{"owner": f"{prefix}{i}@example.com", "reservation_id": f"{prefix}-{i}"} for i in range(n)],
        **extra,
    }  # fmt: skip


def test_an_exam_of_25_runs_together_through_the_loops(sims, demo_fleet, proctor):
    SystemSettings.objects.update_or_create(pk=1, defaults={"admission": "refuse"})
    definition = DefinitionFactory(cpu_cores=1, memory_gb=2, boot_lead_minutes=30, max_duration_minutes=30)
    response = proctor.post("/api/v1/exams/", _body(definition, ROSTER), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["capacity"]["fits"] is True
    exam = Exam.objects.get(pk=response.json()["exam"]["id"])

    drive(lambda: _statuses(exam) == ["READY"] * ROSTER, ticks=80)  # by themselves: placement and instantiation
    assert len({s.worker_id for s in exam.sessions.all()}) >= 2  # spread over the fleet

    assert {r.result for r in exam_action(exam, "start", actor="proctor")} == {"ok"}
    ends = dict(exam.sessions.values_list("pk", "timeslot_end"))
    results = exam_action(exam, "extend", minutes=10, actor="proctor", reason="fire alarm")
    assert [r.result for r in results] == ["ok"] * ROSTER
    moved = dict(exam.sessions.values_list("pk", "timeslot_end"))
    assert all(moved[pk] == ends[pk] + timedelta(minutes=10) for pk in ends)
    drive(lambda: all(abs((end - moved[pk]).total_seconds()) < 60 for pk, end in _lds_ends(exam).items()))

    assert {r.result for r in exam_action(exam, "finish", actor="proctor")} == {"ok"}
    assert set(_statuses(exam)) == {"COLLECTING"}
    drive(lambda: set(_statuses(exam)) == {"ARCHIVED"}, ticks=80)

    rows = list(csv.DictReader(io.StringIO(results_csv(exam))))
    assert len(rows) == ROSTER
    assert all(row["score"] and row["max_score"] and row["result"] in ("PASS", "FAIL") for row in rows)
    assert {row["owner"] for row in rows} == {f"cand{i}@example.com" for i in range(ROSTER)}


def test_a_roster_the_demo_fleet_cannot_hold(sims, demo_fleet, proctor):
    """200 candidates of a 2-CPU lab on 3 × 16 CPU: refused with the numbers, nothing booked; booked with a warning
    on request; and, with autoscaling on and room under the regional maximum, it fits."""
    SystemSettings.objects.update_or_create(pk=1, defaults={"admission": "refuse", "autoscaling_enabled": False})
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    response = proctor.post("/api/v1/exams/", _body(definition, 200), format="json")
    assert response.status_code == 409, response.content
    capacity = response.json()["capacity"]
    assert capacity["shortfall"]["cpu"] == 400 - 48 and capacity["shortfall"]["sessions"] == 200 - 24
    assert any("needs 400 CPU" in r and "the fleet has 48; autoscaling is off" in r for r in capacity["reasons"])
    assert not Exam.objects.exists() and not LabletSession.objects.exists()

    warned = proctor.post("/api/v1/exams/", _body(definition, 200, on_capacity="warn"), format="json")
    assert warned.status_code == 201
    assert warned.json()["capacity"]["fits"] is False and LabletSession.objects.count() == 200
    assert any("176 of the 200 new session(s) fit no worker" in r for r in warned.json()["capacity"]["reasons"])
    LabletSession.objects.all().delete()
    Exam.objects.all().delete()

    template = TemplateFactory(name="exam-large", cpu_cores=96, memory_gb=384, storage_gb=2000, max_nodes=250)
    SystemSettings.objects.filter(pk=1).update(
        autoscaling_enabled=True, max_workers_per_region=8, default_worker_template=template
    )
    response = proctor.post("/api/v1/exams/", _body(definition, 200, prefix="auto"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["capacity"]["fits"] is True
    assert "up to 5 more exam-large" in response.json()["capacity"]["reasons"][0]


def test_bulk_terminate_cleans_every_session_up(sims, demo_fleet):
    """Terminate a whole exam (READY and RUNNING sessions): every session TERMINATED and torn down, leaving no lab in
    CML, no open LDS session and no port (the labs are not kept for reuse here, so they are deleted)."""
    definition = DefinitionFactory(boot_lead_minutes=30, lab_reuse_enabled=False, grading_enabled=False)
    booking = exam_book(
        name="Cancelled", definition=definition, timeslot_start=None, timeslot_end=None,
        candidates=[{"owner": f"t{i}"} for i in range(6)], actor="proctor",
    )  # fmt: skip
    exam = booking.exam
    drive(lambda: _statuses(exam) == ["READY"] * 6)
    first = exam.sessions.order_by("owner").first()
    exam_action(exam, "start", actor="proctor")  # all RUNNING now
    results = exam_action(exam, "terminate", actor="proctor", reason="fire alarm")
    assert [r.result for r in results] == ["ok"] * 6
    drive(lambda: not LabletSession.objects.filter(exam=exam, cleanup_pending=True).exists())
    assert set(_statuses(exam)) == {"TERMINATED"}
    assert LabRecord.objects.exclude(status="DELETED").count() == 0 and Port.objects.count() == 0
    for worker in demo_fleet:
        state = sim_control.get(f"{sims.urls['cml']}/_sim/workers/{worker.name}", timeout=5).json()
        assert not state.get("labs"), state
    lds = sim_control.get(f"{sims.urls['lds']}/_sim/state", timeout=5).json()["sessions"]
    assert len(lds) == 6 and all(s["is_finalized"] for s in lds.values()), lds
    assert first.history.filter(actor="proctor", reason="fire alarm", to_status="TERMINATED").exists()
