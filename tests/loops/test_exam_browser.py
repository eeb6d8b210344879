"""Exams in a real browser (SPEC §8, issue 14): a roster with bad rows keeps its text and names each row,
and a class booked from the page, watched until READY and terminated in bulk after the confirmation, with
the control loops running (ticks + after-commit wake-ups + the in-process pool) against the simulators
until nothing is left: no lab in CML, no open LDS session, no port."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from scheduling.selectors import worker_capacities
from sessions.models import Exam, LabletSession
from tests.factories import DefinitionFactory, WorkerFactory
from tests.support.simulators import sim_control
from tests.support.waiting import poll
from workers.models import LabRecord, Port, SystemSettings

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FMT = "%Y-%m-%dT%H:%M"


def fill_exam_form(page, *, name, definition, start, end, roster):
    page.get_by_label("Exam name").fill(name)
    page.get_by_label("Definition", exact=True).select_option(label=str(definition))
    page.get_by_label("Start (UTC)").fill(start.strftime(FMT))
    page.get_by_label("End (UTC)").fill(end.strftime(FMT))
    page.get_by_label("Roster").fill(roster)


def test_a_roster_with_bad_rows_keeps_the_pasted_text_and_names_both_rows(open_page, instructor):
    definition = DefinitionFactory(name="ccna-exam")
    WorkerFactory(name="w1")
    lines = [f"cand{i}@example.com,R-{i}" for i in range(1, 11)]
    lines[3] = ",R-4"  # row 4: no owner
    lines[8] = "cand9@example.com,R-2"  # row 9: row 2's reservation id
    roster = "owner,reservation_id\n" + "\n".join(lines)
    start = (timezone.now() + timedelta(days=1)).replace(second=0, microsecond=0)

    page = open_page(instructor, "/exams/")
    page.get_by_role("link", name="New exam").click()
    fill_exam_form(
        page, name="Networking 101", definition=definition, start=start, end=start + timedelta(hours=1), roster=roster
    )
    page.get_by_role("button", name=re.compile(r"^Book exam")).click()

    errors = page.locator("#roster-errors li")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text("Row 4")
    expect(errors.nth(0)).to_contain_text("owner")
    expect(errors.nth(1)).to_contain_text("Row 9")
    expect(errors.nth(1)).to_contain_text("R-2")
    expect(page.locator("#form-errors")).to_contain_text("Nothing was booked")
    # The pasted roster and the other fields are still there, as typed.
    assert page.get_by_label("Roster").input_value().replace("\r\n", "\n") == roster
    expect(page.get_by_label("Exam name")).to_have_value("Networking 101")
    expect(page.get_by_label("Definition", exact=True)).to_have_value(str(definition.pk))
    assert not Exam.objects.exists() and not LabletSession.objects.exists()

    # Fixing the two rows in place books the class.
    fixed = roster.replace(",R-4", "cand4@example.com,R-4").replace("cand9@example.com,R-2", "cand9@example.com,R-9")
    page.get_by_label("Roster").fill(fixed)
    page.get_by_role("button", name=re.compile(r"^Book exam")).click()
    expect(page).to_have_url(re.compile(r"/exams/\d+/$"))
    assert LabletSession.objects.filter(exam__name="Networking 101").count() == 10


def _cml_labs(sims, worker):
    return sim_control.get(f"{sims.urls['cml']}/_sim/workers/{worker.name}", timeout=5).json()["labs"]


def _lds_sessions(sims):
    return sim_control.get(f"{sims.urls['lds']}/_sim/state", timeout=5).json()["sessions"]


def test_book_watch_ready_and_terminate_the_class_from_the_page(open_page, instructor, sims, sim_worker, live_loops):
    worker = sim_worker("w1")
    system = SystemSettings.load()
    system.admission = "refuse"
    system.save()
    # Reuse off: teardown deletes each lab, so nothing at all is left in CML afterwards.
    definition = DefinitionFactory(name="ccna-exam", boot_lead_minutes=30, grading_mode="none", lab_reuse_enabled=False)
    start = (timezone.now() + timedelta(minutes=3)).replace(second=0, microsecond=0)
    roster = "owner,reservation_id\nann@example.com,E-1\nbob@example.com,E-2\ncid@example.com,"

    page = open_page(instructor, "/exams/new/")
    fill_exam_form(
        page, name="Class 7B", definition=definition, start=start, end=start + timedelta(hours=1), roster=roster
    )
    page.get_by_role("button", name="Check capacity").click()
    verdict = page.locator("#capacity-verdict")
    expect(verdict).to_have_attribute("data-fits", "true")
    expect(verdict).to_contain_text("Fits: the fleet can hold 3 candidates")
    assert not Exam.objects.exists()  # checking books nothing

    page.get_by_role("button", name="Book exam (3 candidates)").click()
    expect(page).to_have_url(re.compile(r"/exams/\d+/$"))
    expect(page.locator("#toasts")).to_contain_text("Booked 3 sessions for Class 7B")
    exam = Exam.objects.get(name="Class 7B")
    assert exam.sessions.count() == 3

    # The live roster reaches READY by itself (the loops place, import, boot and open LDS).
    expect(page.locator('#roster [data-status="READY"]')).to_have_count(3, timeout=60_000)
    expect(page.locator("#roster .time-left")).to_have_count(3)
    assert len(_cml_labs(sims, worker)) == 3 and Port.objects.count() > 0

    page.get_by_role("button", name="Terminate", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Terminate 3 sessions?")
    assert LabletSession.objects.filter(exam=exam, status="READY").count() == 3  # asking changed nothing
    page.get_by_role("button", name="Terminate 3 sessions").click()
    expect(page.locator("#action-result")).to_have_attribute("data-ok", "3")
    expect(page.locator("#action-result")).to_have_attribute("data-refused", "0")
    page.get_by_role("link", name="Back to the exam").click()
    expect(page.locator('#roster [data-status="TERMINATED"]')).to_have_count(3, timeout=10_000)

    # Torn down by the loops: no lab, no open LDS session, no port, no capacity held.
    assert poll(lambda: not LabletSession.objects.filter(exam=exam, cleanup_pending=True).exists(), timeout=60)
    assert set(exam.sessions.values_list("status", flat=True)) == {"TERMINATED"}
    assert poll(lambda: _cml_labs(sims, worker) == {}, timeout=30), _cml_labs(sims, worker)
    lds = _lds_sessions(sims)
    assert len(lds) == 3 and all(s["is_finalized"] for s in lds.values()), lds
    assert not Port.objects.exists()
    assert set(LabRecord.objects.values_list("status", flat=True)) <= {"DELETED"}
    assert worker_capacities([worker.pk])[str(worker.pk)].sessions == 0
    expect(page.locator("#live")).not_to_have_attribute("hx-trigger", re.compile("every"))  # polling stopped
