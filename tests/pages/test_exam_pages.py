"""The exam pages through Django's test client (SPEC §8): list, new exam with its capacity check and per-row
roster errors, the live roster, bulk actions behind a server-rendered confirmation, the results CSV, the
dashboard's "Today's exams", permissions, junk input and query budgets."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from lcm import live
from sessions.models import Exam, LabletSession
from tests.factories import DefinitionFactory, WorkerFactory
from tests.pages.conftest import make_session
from workers.models import SystemSettings

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}
FMT = "%Y-%m-%dT%H:%M"


@pytest.fixture
def definition(db):
    return DefinitionFactory(name="ccna-exam", cpu_cores=2, memory_gb=4, storage_gb=10)


@pytest.fixture
def worker(db):
    return WorkerFactory(name="w1")  # 16 CPU, 64 GB: eight sessions of the definition


def set_admission(mode):
    system = SystemSettings.load()
    system.admission = mode
    system.save()


def slot(hours=2, minutes=60):
    start = (timezone.now() + timedelta(hours=hours)).replace(second=0, microsecond=0)
    return start, start + timedelta(minutes=minutes)


def form_data(definition, roster, **extra):
    start, end = slot()
    return {
        "name": "Networking 101",
        "definition": str(definition.pk),
        "timeslot_start": start.strftime(FMT),
        "timeslot_end": end.strftime(FMT),
        "notes": "room 4",
        "roster": roster,
        **extra,
    }


def roster_text(n, *, header=True):
    lines = ["owner,reservation_id"] if header else []
    return "\n".join(lines + [f"cand{i}@example.com,R-{i}" for i in range(1, n + 1)])


def make_exam(definition, *, name="Networking 101", hours=1):
    start, end = slot(hours=hours)
    return Exam.objects.create(name=name, definition=definition, timeslot_start=start, timeslot_end=end)


def exam_urls(exam):
    return [
        "/exams/",
        "/exams/new/",
        f"/exams/{exam.pk}/",
        f"/exams/{exam.pk}/actions/terminate/",
        f"/exams/{exam.pk}/results.csv",
    ]


# --- access -----------------------------------------------------------------------------------


def test_every_exam_page_requires_login(client, definition):
    exam = make_exam(definition)
    for url in exam_urls(exam):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    response = client.post(f"/exams/{exam.pk}/actions/terminate/", {"count": "0"})
    assert response.status_code == 302


def test_a_user_without_a_role_gets_403(client, django_user_model, definition):
    exam = make_exam(definition)
    make_session("READY", definition=definition, exam=exam)
    client.force_login(django_user_model.objects.create_user("nobody", password="x"))
    for url in exam_urls(exam):
        assert client.get(url).status_code == 403, url
    assert client.post("/exams/new/", form_data(definition, roster_text(2))).status_code == 403
    assert client.post(f"/exams/{exam.pk}/actions/terminate/", {"count": "1"}).status_code == 403
    assert not Exam.objects.exclude(pk=exam.pk).exists()
    assert LabletSession.objects.get(exam=exam).status == "READY"


def test_instructors_and_admins_see_every_exam_page(instructor_client, admin_client, definition):
    exam = make_exam(definition)
    for client in (instructor_client, admin_client):
        for url in exam_urls(exam):
            assert client.get(url).status_code == 200, url
    html = instructor_client.get("/").content.decode()
    assert '<a href="/exams/">Exams</a>' in html  # the nav link


def test_unknown_exams_and_actions_are_404(instructor_client, definition):
    exam = make_exam(definition)
    for url in (
        "/exams/999999/",
        "/exams/99999999999999999999/",
        f"/exams/{exam.pk}/actions/explode/",
        "/exams/999/results.csv",
    ):
        assert instructor_client.get(url).status_code == 404, url


# --- the list -----------------------------------------------------------------------------------


def test_the_list_shows_each_exam_with_its_counts_and_a_link(instructor_client, definition):
    exam = make_exam(definition, name="Security 201")
    for status in ("READY", "READY", "RUNNING"):
        make_session(status, definition=definition, exam=exam, with_children=False)
    make_exam(definition, name="Empty one", hours=30)
    html = instructor_client.get("/exams/").content.decode()
    assert f'href="/exams/{exam.pk}/">Security 201</a>' in html
    assert "ccna-exam" in html and exam.timeslot_start.strftime("%Y-%m-%d %H:%M") in html
    ready = re.search(r'data-count-status="READY">.*?<strong>(\d+)</strong>', html, re.S).group(1)
    running = re.search(r'data-count-status="RUNNING">.*?<strong>(\d+)</strong>', html, re.S).group(1)
    assert (ready, running) == ("2", "1")
    assert "Empty one" in html and "no sessions" in html
    searched = instructor_client.get("/exams/?q=secur").content.decode()
    assert "Security 201" in searched and "Empty one" not in searched


# --- new exam -----------------------------------------------------------------------------------


def test_check_capacity_shows_the_verdict_with_numbers_and_books_nothing(instructor_client, definition, worker):
    response = instructor_client.post("/exams/new/", {**form_data(definition, roster_text(3)), "step": "check"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-fits="true"' in html and "Fits: the fleet can hold 3 candidates" in html
    assert re.search(r"<td>CPU</td><td class=\"num\">6</td><td class=\"num\">16</td>", html), html
    assert "Book exam (3 candidates)" in html
    assert "cand3@example.com,R-3" in html  # the roster is still in the textarea
    assert not Exam.objects.exists() and not LabletSession.objects.exists()


def test_booking_redirects_to_the_exam_with_every_session(instructor_client, definition, worker):
    response = instructor_client.post("/exams/new/", {**form_data(definition, roster_text(3)), "step": "book"})
    exam = Exam.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/exams/{exam.pk}/"
    assert exam.name == "Networking 101" and exam.notes == "room 4" and exam.created_by == "instructor"
    sessions = LabletSession.objects.filter(exam=exam).order_by("owner")
    assert [(s.owner, s.reservation_id, s.status) for s in sessions] == [
        (f"cand{i}@example.com", f"R-{i}", "PENDING") for i in (1, 2, 3)
    ]
    page = instructor_client.get(response["Location"]).content.decode()
    assert "Booked 3 sessions for Networking 101" in page


def test_a_roster_that_does_not_fit_is_refused_with_the_numbers_and_nothing_booked(
    instructor_client, definition, worker
):
    set_admission("refuse")
    data = {**form_data(definition, roster_text(12)), "step": "check"}
    html = instructor_client.post("/exams/new/", data).content.decode()
    assert (
        'data-fits="false"' in html and "Does not fit" in html and "Admission policy: <strong>refuse</strong>" in html
    )
    assert re.search(
        r"<td>CPU</td><td class=\"num\">24</td><td class=\"num\">16</td><td class=\"num\"><strong>8</strong>", html
    )

    response = instructor_client.post("/exams/new/", {**data, "step": "book"})
    assert response.status_code == 409
    html = response.content.decode()
    assert "Refused: the fleet cannot hold 12 candidates" in html and "cand12@example.com,R-12" in html
    assert not Exam.objects.exists() and not LabletSession.objects.exists()


def test_under_warn_it_books_and_says_what_will_not_fit(instructor_client, definition, worker):
    set_admission("warn")
    response = instructor_client.post(
        "/exams/new/", {**form_data(definition, roster_text(12)), "step": "book"}, follow=True
    )
    assert response.status_code == 200
    assert LabletSession.objects.filter(exam__isnull=False).count() == 12
    html = response.content.decode()
    assert "Booked although the capacity check says it does not fit" in html


def test_row_errors_name_each_row_keep_the_roster_and_book_nothing(instructor_client, definition, worker):
    lines = [f"cand{i}@example.com,R-{i}" for i in range(1, 11)]
    lines[3] = ",R-4"  # row 4: blank owner
    lines[8] = "cand9@example.com,R-2"  # row 9: the reservation id of row 2
    roster = "owner,reservation_id\n" + "\n".join(lines)
    response = instructor_client.post("/exams/new/", {**form_data(definition, roster), "step": "book"})
    assert response.status_code == 422
    html = response.content.decode()
    errors = re.findall(r'<li class="field-error">([^<]+)</li>', html)
    assert any(e.startswith("Row 4") and "owner" in e for e in errors), errors
    assert any(e.startswith("Row 9") and "R-2" in e for e in errors), errors
    assert "2 roster rows have errors" in html and "Nothing was booked" in html
    assert "cand9@example.com,R-2" in html and ",R-4" in html  # the pasted roster, kept
    assert 'value="Networking 101"' in html  # and the other fields
    assert not Exam.objects.exists() and not LabletSession.objects.exists()


def test_a_reservation_id_booked_before_is_a_row_error(instructor_client, definition, worker):
    make_session("PENDING", definition=definition, reservation_id="R-2", with_children=False)
    response = instructor_client.post("/exams/new/", {**form_data(definition, roster_text(3)), "step": "book"})
    assert response.status_code == 422
    assert re.search(r'<li class="field-error">Row 2[^<]*R-2[^<]*already booked', response.content.decode())
    assert not Exam.objects.exists()


def test_a_csv_upload_books_and_its_text_is_shown_back_on_errors(instructor_client, definition, worker):
    data = form_data(definition, "")
    upload = SimpleUploadedFile(
        "roster.csv", b"\xef\xbb\xbfowner,reservation_id\nann@x.org,A1\nbea@x.org,\n", "text/csv"
    )
    response = instructor_client.post("/exams/new/", {**data, "roster_file": upload, "step": "book"})
    assert response.status_code == 302
    assert sorted(LabletSession.objects.values_list("owner", "reservation_id")) == [
        ("ann@x.org", "A1"),
        ("bea@x.org", None),
    ]

    bad = SimpleUploadedFile("roster.csv", b"owner\nzed@x.org\nzed@x.org\n", "text/csv")
    response = instructor_client.post("/exams/new/", {**data, "name": "Second", "roster_file": bad, "step": "book"})
    assert response.status_code == 422
    html = response.content.decode()
    assert "zed@x.org\nzed@x.org" in html  # the file's roster, now in the textarea
    assert re.search(r'<li class="field-error">Row 2[^<]*zed@x.org', html)
    assert not Exam.objects.filter(name="Second").exists()


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (b"\xff\xfe\x00o\x00w", "not UTF-8"),
        (b"owner\n" + b"a" * 1_000_001, "larger than 1 MB"),
    ],
)
def test_a_bad_upload_is_a_field_error(instructor_client, definition, upload, message):
    data = {**form_data(definition, ""), "roster_file": SimpleUploadedFile("r.csv", upload), "step": "book"}
    response = instructor_client.post("/exams/new/", data)
    assert response.status_code == 422 and message in response.content.decode()
    assert not Exam.objects.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "This field is required"),
        ({"roster": "   "}, "Paste the roster or choose a CSV file"),
        ({"timeslot_end": "2000-01-01T00:00"}, "The end must be after the start"),
        ({"timeslot_start": "yesterday"}, "Enter a valid date/time"),
        ({"definition": "not-a-uuid"}, "is not a valid UUID"),
        ({"definition": "00000000-0000-0000-0000-000000000000"}, "Select a valid choice"),
        ({"roster": "owner,seat\nann,1"}, "header has"),
        ({"roster": "ann,R1,extra"}, "columns"),
        ({"roster": "a\x00b"}, "Null characters are not allowed"),
        ({"roster": "\n".join(f"c{i}" for i in range(1001))}, "The roster has 1001 rows; at most 1000"),
        ({"roster": "owner,reservation_id\n"}, "The roster has no candidates"),
    ],
)
def test_field_errors_keep_the_input_and_book_nothing(instructor_client, definition, worker, change, message):
    response = instructor_client.post(
        "/exams/new/", {**form_data(definition, roster_text(2)), **change, "step": "book"}
    )
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Exam.objects.exists() and not LabletSession.objects.exists()


def test_a_past_timeslot_is_refused_by_the_service_on_the_form(instructor_client, definition, worker):
    past = timezone.now() - timedelta(days=3)
    data = {**form_data(definition, roster_text(2)), "timeslot_start": past.strftime(FMT)}
    data["timeslot_end"] = (past + timedelta(hours=1)).strftime(FMT)
    response = instructor_client.post("/exams/new/", {**data, "step": "book"})
    assert response.status_code == 422 and not Exam.objects.exists()


# --- the exam page -------------------------------------------------------------------------------


@pytest.fixture
def running_exam(definition, worker):
    exam = make_exam(definition, hours=0)
    owners = {}
    for status in ("READY", "READY", "RUNNING", "ARCHIVED", "PENDING"):
        session = make_session(status, definition=definition, worker=worker, exam=exam)
        owners[session.owner] = session
    return exam


def test_the_roster_shows_owner_status_time_left_and_score(instructor_client, running_exam):
    html = instructor_client.get(f"/exams/{running_exam.pk}/").content.decode()
    statuses = re.findall(r'<span data-status="(\w+)">', html)
    assert sorted(statuses) == ["ARCHIVED", "PENDING", "READY", "READY", "RUNNING"]
    assert html.count("min left") == 3  # READY and RUNNING
    assert '<span class="score">82.00 / 100.00</span>' in html or '<span class="score">82' in html  # the ARCHIVED one
    for session in running_exam.sessions.all():
        assert f'href="/sessions/{session.pk}/">{session.owner}</a>' in html
    assert re.search(r'data-count-status="READY">.*?<strong>2</strong>', html, re.S)
    assert f'href="/exams/{running_exam.pk}/results.csv"' in html
    assert 'hx-trigger="every' in html  # live


def test_the_roster_polls_204_until_it_changes_and_stops_when_all_ended(instructor_client, running_exam):
    html = instructor_client.get(f"/exams/{running_exam.pk}/").content.decode()
    poll = re.search(r'hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert instructor_client.get(poll, headers=HX).status_code == 204
    LabletSession.objects.filter(exam=running_exam, status="PENDING").update(status="SCHEDULED")
    live.bump([f"exam:{running_exam.pk}"])  # a raw UPDATE skips the writers that bump the roster's change stamp
    changed = instructor_client.get(poll, headers=HX)
    assert changed.status_code == 200 and 'data-status="SCHEDULED"' in changed.content.decode()
    LabletSession.objects.filter(exam=running_exam).update(status="TERMINATED")
    done = instructor_client.get(f"/exams/{running_exam.pk}/").content.decode()
    assert "hx-trigger" not in done


def test_terminate_asks_naming_the_count_then_acts_and_lists_the_refused(instructor_client, running_exam):
    confirm = instructor_client.get(f"/exams/{running_exam.pk}/actions/terminate/")
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "Terminate 4 sessions?" in html  # all but the ARCHIVED one
    assert "1 other session of the exam is in a state this action does not apply to" in html
    assert '<input type="hidden" name="count" value="4">' in html
    assert LabletSession.objects.filter(exam=running_exam, status="TERMINATED").count() == 0  # asking changes nothing

    result = instructor_client.post(f"/exams/{running_exam.pk}/actions/terminate/", {"count": "4"})
    html = result.content.decode()
    assert result.status_code == 200 and "Terminate: 4 done, 1 refused" in html
    archived = LabletSession.objects.get(exam=running_exam, status="ARCHIVED")
    assert re.search(rf'<a href="/sessions/{archived.pk}/">{archived.owner}</a></td><td>ARCHIVED: ', html)
    statuses = sorted(LabletSession.objects.filter(exam=running_exam).values_list("status", flat=True))
    assert statuses == ["ARCHIVED"] + ["TERMINATED"] * 4


def test_a_confirmation_for_a_count_that_changed_asks_again(instructor_client, running_exam):
    response = instructor_client.post(f"/exams/{running_exam.pk}/actions/start/", {"count": "5"})
    assert response.status_code == 409
    html = response.content.decode()
    assert "now touches 2 sessions, not 5" in html and "Start 2 sessions?" in html
    assert LabletSession.objects.filter(exam=running_exam, status="RUNNING").count() == 1  # nothing done
    for junk in ("", "abc", "-1", "9" * 40):
        assert instructor_client.post(f"/exams/{running_exam.pk}/actions/start/", {"count": junk}).status_code == 409


def test_start_moves_the_ready_ones(instructor_client, running_exam):
    result = instructor_client.post(f"/exams/{running_exam.pk}/actions/start/", {"count": "2"})
    assert "Start: 2 done, 3 refused" in result.content.decode()
    assert LabletSession.objects.filter(exam=running_exam, status="RUNNING").count() == 3


def test_finish_moves_the_running_ones(instructor_client, running_exam):
    assert "Finish 1 session?" in instructor_client.get(f"/exams/{running_exam.pk}/actions/finish/").content.decode()
    instructor_client.post(f"/exams/{running_exam.pk}/actions/finish/", {"count": "1"})
    assert LabletSession.objects.filter(exam=running_exam, status="COLLECTING").count() == 1


def test_extend_by_ten_minutes_with_a_reason(instructor_client, running_exam):
    before = dict(LabletSession.objects.filter(exam=running_exam).values_list("pk", "timeslot_end"))
    url = f"/exams/{running_exam.pk}/actions/extend/"
    html = instructor_client.get(url, {"minutes": "10", "reason": "fire alarm"}).content.decode()
    assert "Extend 4 sessions?" in html and "10 more minutes" in html and "Reason: fire alarm" in html
    assert '<input type="hidden" name="minutes" value="10">' in html
    result = instructor_client.post(url, {"count": "4", "minutes": "10", "reason": "fire alarm"})
    assert "Extend: 4 done, 1 refused" in result.content.decode()
    for session in LabletSession.objects.filter(exam=running_exam):
        moved = (session.timeslot_end - before[session.pk]).total_seconds()
        assert moved == (0 if session.status == "ARCHIVED" else 600), session.status
    assert running_exam.sessions.first().history.filter(reason__contains="fire alarm").exists()


@pytest.mark.parametrize("minutes", ["", "7", "abc", "-5", "100000"])
def test_extend_needs_one_of_the_quick_choices(instructor_client, running_exam, minutes):
    url = f"/exams/{running_exam.pk}/actions/extend/"
    before = list(LabletSession.objects.filter(exam=running_exam).values_list("timeslot_end", flat=True))
    for response in (
        instructor_client.get(url, {"minutes": minutes}),
        instructor_client.post(url, {"count": "4", "minutes": minutes}),
    ):
        assert response.status_code == 302 and response["Location"] == f"/exams/{running_exam.pk}/"
    assert list(LabletSession.objects.filter(exam=running_exam).values_list("timeslot_end", flat=True)) == before
    assert "choose +5, +10 or +15 minutes" in instructor_client.get(f"/exams/{running_exam.pk}/").content.decode()


def test_an_action_that_touches_nothing_says_so(instructor_client, definition):
    exam = make_exam(definition)
    make_session("ARCHIVED", definition=definition, exam=exam)
    html = instructor_client.get(f"/exams/{exam.pk}/actions/start/").content.decode()
    assert "Start 0 sessions?" in html and "No session of this exam is in a state" in html
    assert 'name="count"' not in html


def test_the_results_csv(instructor_client, running_exam):
    response = instructor_client.get(f"/exams/{running_exam.pk}/results.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert f'filename="exam-{running_exam.pk}-results.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 5 and {r["owner"] for r in rows} == set(running_exam.sessions.values_list("owner", flat=True))
    archived = next(r for r in rows if r["status"] == "ARCHIVED")
    assert float(archived["score"]) == 82


# --- dashboard ----------------------------------------------------------------------------------


def test_the_dashboard_lists_todays_exams(instructor_client, definition):
    now = timezone.now()
    today = Exam.objects.create(
        name="Today's class", definition=definition, timeslot_start=now, timeslot_end=now + timedelta(minutes=30)
    )
    make_session("RUNNING", definition=definition, exam=today, with_children=False)
    Exam.objects.create(
        name="Next week",
        definition=definition,
        timeslot_start=now + timedelta(days=7),
        timeslot_end=now + timedelta(days=7, hours=1),
    )
    html = instructor_client.get("/").content.decode()
    panel = html[html.index('id="todays-exams"') :]
    panel = panel[: panel.index("</section>")]
    assert f'href="/exams/{today.pk}/">Today&#x27;s class</a>' in panel
    assert today.timeslot_start.strftime("%H:%M") in panel and 'data-count-status="RUNNING"' in panel
    assert "Next week" not in panel


def test_the_dashboard_says_when_there_is_no_exam_today(instructor_client):
    assert "No exam today" in instructor_client.get("/").content.decode()


# --- query budgets --------------------------------------------------------------------------------


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200, url
    return len(ctx.captured_queries)


def test_exam_pages_query_counts_do_not_grow_with_the_roster(instructor_client, definition, worker):
    exam = make_exam(definition, hours=0)
    other = make_exam(definition, name="Other", hours=0)

    def add(n):
        for i in range(n):
            make_session(
                ["READY", "RUNNING", "ARCHIVED"][i % 3], definition=definition, worker=worker, exam=[exam, other][i % 2]
            )

    urls = [
        "/",
        "/exams/",
        f"/exams/{exam.pk}/",
        f"/exams/{exam.pk}/actions/terminate/",
        f"/exams/{exam.pk}/results.csv",
    ]
    add(10)
    [_queries(instructor_client, u) for u in urls]  # warm up
    small = [_queries(instructor_client, u) for u in urls]
    add(90)
    assert small == [_queries(instructor_client, u) for u in urls]


JUNK = ["", "\x00", "'; DROP TABLE exams; --", "%", "x" * 5000, "😀", "-1", "1e309", "<script>x</script>"]


@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
def test_no_exam_page_returns_500_for_junk(instructor_client, definition, junk):
    exam = make_exam(definition)
    for url in ("/exams/", "/exams/new/", f"/exams/{exam.pk}/", f"/exams/{exam.pk}/actions/extend/"):
        response = instructor_client.get(url, {"q": junk, "page": junk, "minutes": junk, "reason": junk})
        assert response.status_code in (200, 204, 302), (url, response.status_code)
    data = {k: junk for k in ("name", "definition", "timeslot_start", "timeslot_end", "notes", "roster", "step")}
    assert instructor_client.post("/exams/new/", data).status_code in (200, 409, 422)
    assert instructor_client.post(f"/exams/{exam.pk}/actions/terminate/", {"count": junk}).status_code == 409
    assert not Exam.objects.exclude(pk=exam.pk).exists()
