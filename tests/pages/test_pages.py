"""Pages through Django's test client: roles, forms, actions, live-update polling, CSV, query budgets
and junk filter values (SPEC §5.3, §5.4, §6.2)."""

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import TextChoices
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import grading.states
import sessions.states
import workers.states
from grading.models import ScoreReport
from lcm.models import LoopHeartbeat
from lcm.templatetags.badges import BADGE_COLOURS_BY_KIND
from sessions.models import LabletDefinition, LabletSession
from sessions.services import session_transition
from sessions.states import SESSION_BADGE_COLOURS, SessionStatus
from tests.factories import DEMO_LAB, DefinitionFactory, LabRecordFactory, WorkerFactory
from tests.pages.conftest import make_session
from workers.models import CMLWorker, SystemSettings
from workers.states import LAB_BADGE_COLOURS, WorkerStatus

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent
HX = {"HX-Request": "true"}


def page_urls(fleet):
    session = fleet["sessions"]["GRADING"].pk
    worker = fleet["worker"].pk
    definition = fleet["definition"].pk
    return [
        "/",
        "/sessions/",
        f"/sessions/{session}/",
        "/workers/",
        f"/workers/{worker}/",
        "/definitions/",
        f"/definitions/{definition}/",
        "/definitions/new/",
        "/reports/",
        "/reports/export.csv",
        "/scheduler/",
        f"/scheduler/?definition={definition}",
        "/attention/",
        f"/workers/{worker}/confirm/drain/",
        f"/workers/{worker}/confirm/stop/",
        "/settings/",
    ]


ADMIN_ONLY = ("/definitions/new/", "/settings/", "/confirm/")


# --- access ------------------------------------------------------------------------------


def test_every_page_requires_login(client, fleet):
    for url in page_urls(fleet):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/"), url


def test_a_user_without_a_role_gets_403(client, django_user_model, fleet):
    client.force_login(django_user_model.objects.create_user("nobody", password="x"))
    for url in page_urls(fleet):
        assert client.get(url).status_code == 403, url


def test_every_page_renders_for_an_admin(admin_client, fleet):
    for url in page_urls(fleet):
        response = admin_client.get(url)
        assert response.status_code == 200, url


def test_instructors_see_every_page_but_the_admin_ones(instructor_client, fleet):
    for url in page_urls(fleet):
        response = instructor_client.get(url)
        admin_only = any(part in url for part in ADMIN_ONLY)
        assert response.status_code == (403 if admin_only else 200), url
    assert "Only admins" in instructor_client.get("/settings/").content.decode()


def test_admin_actions_are_403_for_instructors(instructor_client, fleet):
    worker, definition = fleet["worker"], fleet["definition"]
    posts = [
        ("/settings/", {"idle_timeout_minutes": 5}),
        ("/definitions/new/", {"name": "x"}),
        (f"/definitions/{definition.pk}/status/", {"target": "INACTIVE"}),
        ("/workers/new/", {"template": fleet["template"].pk}),
        *[(f"/workers/{worker.pk}/actions/{a}/", {}) for a in ("start", "stop", "drain", "cancel-drain", "terminate")],
    ]
    for url, data in posts:
        assert instructor_client.post(url, data).status_code == 403, url
    worker.refresh_from_db()
    definition.refresh_from_db()
    assert (worker.status, worker.desired_status, definition.status) == ("RUNNING", "RUNNING", "ACTIVE")
    assert not CMLWorker.objects.filter(template=fleet["template"]).exclude(name__in=["worker-a", "worker-b"]).exists()


def test_instructors_do_not_see_admin_controls(instructor_client, admin_client, fleet):
    worker = fleet["worker"]
    checks = [
        ("/workers/", "New worker"),
        (f"/workers/{worker.pk}/", 'id="worker-actions"'),
        ("/definitions/", "Upload definition"),
        (f"/definitions/{fleet['definition'].pk}/", "Deactivate"),
        ("/", 'href="/settings/"'),
    ]
    for url, marker in checks:
        assert marker in admin_client.get(url).content.decode(), url
        assert marker not in instructor_client.get(url).content.decode(), url


def test_sessions_buttons_are_for_instructors(instructor_client, fleet):
    session = fleet["sessions"]["READY"]
    response = instructor_client.post(f"/sessions/{session.pk}/actions/start/", {"expected": "READY"}, headers=HX)
    assert response.status_code == 200
    session.refresh_from_db()
    assert session.status == "RUNNING"


# --- the session detail: buttons, stale buttons, live polling -------------------------------

# The Extend form's buttons: a quick +5/+10/+15 minutes, or Extend to the end typed in (SPEC §3.4a).
EXTEND = ["+5 min", "+10 min", "+15 min", "Extend"]
BUTTONS = {
    "READY": ["Start Session", "Terminate", *EXTEND],
    "RUNNING": ["Finish Session", "Terminate", *EXTEND],
    "COLLECTING": ["Start Grading", "Skip Grading"],
    "GRADING": ["Complete Grading", "Terminate"],
    "STOPPED": ["Archive"],
    "PENDING": ["Terminate", *EXTEND],
    "SCHEDULED": ["Terminate", *EXTEND, "Requeue"],
    "INSTANTIATING": ["Terminate", *EXTEND],
}


def action_buttons(html: str) -> list[str]:
    block = html.split('id="session-actions"', 1)[1].split("</section>", 1)[0]
    return [re.sub(r"\s+", " ", b).strip() for b in re.findall(r"<button[^>]*>(.*?)</button>", block, re.S)]


def test_detail_shows_exactly_the_buttons_of_the_spec_table(admin_client, fleet):
    for status, session in fleet["sessions"].items():
        html = admin_client.get(f"/sessions/{session.pk}/").content.decode()
        assert f'data-status="{status}"' in html
        assert html.count("data-status=") == 1, status
        assert action_buttons(html) == BUTTONS.get(status, []), status


def test_grading_buttons_only_where_they_act_and_archive_only_while_held(admin_client, fleet):
    collecting, stopped = fleet["sessions"]["COLLECTING"], fleet["sessions"]["STOPPED"]
    html = admin_client.get(f"/sessions/{collecting.pk}/").content.decode()
    assert "Waiting for an instructor: Start Grading or Skip Grading." in html
    html = admin_client.get(f"/sessions/{stopped.pk}/").content.decode()
    assert "Lab kept for review until" in html and action_buttons(html) == ["Archive"]
    pressed = admin_client.post(
        f"/sessions/{stopped.pk}/actions/archive/", {"expected": "STOPPED", "confirmed": "1"}, headers=HX
    )
    assert pressed.status_code == 200 and "Archiving" in pressed.content.decode()
    held = LabletSession.objects.get(pk=stopped.pk)
    assert held.hold_until <= timezone.now() and held.history.filter(reason__contains="review hold ended").exists()

    auto = DefinitionFactory(name="auto-graded", grading_mode="auto")
    LabletSession.objects.filter(pk=collecting.pk).update(definition=auto)
    html = admin_client.get(f"/sessions/{collecting.pk}/").content.decode()
    assert action_buttons(html) == [] and "Start Grading" not in html
    assert "Grading starts by itself" in html
    LabletSession.objects.filter(pk=stopped.pk).update(hold_until=None)
    html = admin_client.get(f"/sessions/{stopped.pk}/").content.decode()
    assert action_buttons(html) == [] and "Lab kept for review" not in html
    confirmed = {"expected": "STOPPED", "confirmed": "1"}
    refused = admin_client.post(f"/sessions/{stopped.pk}/actions/archive/", confirmed, headers=HX)
    assert refused.status_code == 409 and LabletSession.objects.get(pk=stopped.pk).status == "STOPPED"


def test_a_stale_button_gets_a_message_not_an_error(admin_client, fleet):
    session = fleet["sessions"]["READY"]
    session_transition(session, "RUNNING", actor="someone-else")
    response = admin_client.post(f"/sessions/{session.pk}/actions/start/", {"expected": "READY"}, headers=HX)
    assert response.status_code == 409
    html = response.content.decode()
    assert "no longer applies" in html and "RUNNING" in html
    assert 'data-status="RUNNING"' in html  # the fragment shows the current state and its buttons
    assert action_buttons(html) == BUTTONS["RUNNING"]
    # Without htmx: a message and a redirect back to the page.
    response = admin_client.post(f"/sessions/{session.pk}/actions/start/", {"expected": "READY"}, follow=True)
    assert response.status_code == 200
    assert "no longer applies" in response.content.decode()


def test_a_button_from_another_state_is_refused_even_without_expected(admin_client, fleet):
    session = fleet["sessions"]["COLLECTING"]
    response = admin_client.post(f"/sessions/{session.pk}/actions/terminate/", headers=HX)
    assert response.status_code == 409
    session.refresh_from_db()
    assert session.status == "COLLECTING"
    assert admin_client.post(f"/sessions/{session.pk}/actions/fly/", headers=HX).status_code == 404


@pytest.mark.parametrize(
    ("status", "action", "data", "target"),
    [
        ("READY", "start", {}, "RUNNING"),
        ("RUNNING", "finish", {}, "COLLECTING"),
        ("COLLECTING", "start-grading", {}, "GRADING"),
        ("COLLECTING", "skip-grading", {}, "STOPPING"),
        ("GRADING", "complete-grading", {}, "STOPPING"),
        ("RUNNING", "terminate", {}, "TERMINATED"),
        ("SCHEDULED", "requeue", {}, "PENDING"),
    ],
)
def test_buttons_move_the_session_through_the_services(admin_client, fleet, status, action, data, target):
    session = fleet["sessions"][status]
    body = {"expected": status, "confirmed": "1", **data}
    response = admin_client.post(f"/sessions/{session.pk}/actions/{action}/", body, headers=HX)
    assert response.status_code == 200, response.content.decode()[:500]
    session.refresh_from_db()
    assert session.status == target
    last = session.history.order_by("-at", "-id").first()
    assert (last.to_status, last.actor) == (target, "admin")
    assert 'hx-swap-oob="beforeend"' in response.content.decode()  # the toast


def test_complete_grading_with_a_manual_score(admin_client, fleet):
    session = make_session("GRADING", definition=fleet["definition"], worker=fleet["worker"], with_children=False)
    url = f"/sessions/{session.pk}/actions/complete-grading/"
    bad = admin_client.post(url, {"expected": "GRADING", "confirmed": "1", "score": "5"}, headers=HX)
    assert bad.status_code == 422
    assert "none of them" in bad.content.decode()
    # Refused by the score service inside the move (the grading app's STOPPING hook): nothing is written.
    over = admin_client.post(
        url, {"expected": "GRADING", "confirmed": "1", "score": "11", "max_score": "10", "cut_score": "6"}, headers=HX
    )
    assert over.status_code == 422 and "must not exceed max_score" in over.content.decode()
    session.refresh_from_db()
    assert session.status == "GRADING" and not ScoreReport.objects.filter(lablet_session=session).exists()
    score = {"expected": "GRADING", "confirmed": "1", "score": "7", "max_score": "10", "cut_score": "6"}
    ok = admin_client.post(url, score, headers=HX)
    assert ok.status_code == 200
    session.refresh_from_db()
    assert (session.status, session.grade_result) == ("STOPPING", "PASS")
    assert ScoreReport.objects.get(lablet_session=session).manual


def test_extend(admin_client, instructor_client, fleet):
    session = fleet["sessions"]["PENDING"]
    url = f"/sessions/{session.pk}/actions/extend/"
    minutes = (session.timeslot_end - session.timeslot_start).total_seconds() / 60
    new_end = (session.timeslot_end + timezone.timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M")
    too_long = instructor_client.post(url, {"expected": "PENDING", "timeslot_end": new_end}, headers=HX)
    assert too_long.status_code == 422
    ceiling = session.definition.max_duration_minutes + SystemSettings.load().max_extension_minutes
    assert minutes + 45 > ceiling and f"instructors may extend to at most {ceiling}" in too_long.content.decode()
    assert new_end in too_long.content.decode()  # the input is kept
    junk = instructor_client.post(url, {"expected": "PENDING", "timeslot_end": "soon"}, headers=HX)
    assert junk.status_code == 422
    nothing = instructor_client.post(url, {"expected": "PENDING"}, headers=HX)
    assert nothing.status_code == 422 and "add minutes with a + button" in nothing.content.decode()
    no_reason = admin_client.post(url, {"expected": "PENDING", "timeslot_end": new_end}, headers=HX)
    assert no_reason.status_code == 422 and "needs a reason" in no_reason.content.decode()
    ok = admin_client.post(url, {"expected": "PENDING", "timeslot_end": new_end, "reason": "medical"}, headers=HX)
    assert ok.status_code == 200  # admins may exceed, saying why
    session.refresh_from_db()
    assert session.timeslot_end.strftime("%Y-%m-%dT%H:%M") == new_end
    assert session.history.filter(actor="admin", reason__contains="medical").exists()


def test_a_session_stored_with_the_latest_possible_end_still_shows_and_refuses_more_time(instructor_client, fleet):
    from datetime import UTC, datetime

    session = fleet["sessions"]["RUNNING"]
    LabletSession.objects.filter(pk=session.pk).update(timeslot_end=datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    assert instructor_client.get(f"/sessions/{session.pk}/").status_code == 200
    url = f"/sessions/{session.pk}/actions/extend/"
    response = instructor_client.post(url, {"expected": "RUNNING", "add_minutes": "10"}, headers=HX)
    assert response.status_code == 422 and "as late as a date can be" in response.content.decode()


def test_a_running_session_gets_ten_more_minutes_with_one_button(instructor_client, fleet):
    session = fleet["sessions"]["RUNNING"]
    before = session.timeslot_end
    url = f"/sessions/{session.pk}/actions/extend/"
    response = instructor_client.post(url, {"expected": "RUNNING", "add_minutes": "10"}, headers=HX)
    assert response.status_code == 200, response.content.decode()[:300]
    session.refresh_from_db()
    assert session.timeslot_end - before == timezone.timedelta(minutes=10) and session.status == "RUNNING"
    assert session.history.filter(actor="instructor", reason__contains="timeslot_end").exists()


def test_instantiation_progress_shows_the_step_nodes_and_the_last_error(admin_client, fleet):
    session = fleet["sessions"]["INSTANTIATING"]
    lab = LabRecordFactory(worker=fleet["worker"], status="STARTING", node_count=2)
    LabletSession.objects.filter(pk=session.pk).update(
        lab_record=lab, attempts=2, last_error="CML 503", next_attempt_at=timezone.now()
    )
    html = admin_client.get(f"/sessions/{session.pk}/").content.decode()
    assert '<li class="current">' in html and "Lab started, nodes booted" in html
    assert "?/2 nodes booted" in html and "CML 503" in html and "attempt 2" in html and "Next retry" in html


def test_polling_answers_204_until_something_changes(admin_client, fleet):
    session = fleet["sessions"]["READY"]
    url = f"/sessions/{session.pk}/"
    first = admin_client.get(url, headers=HX)
    html = first.content.decode()
    assert first.status_code == 200 and html.lstrip().startswith('<div id="live"')
    poll = re.search(r'hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert 'hx-trigger="every 1s"' in html
    assert admin_client.get(poll, headers=HX).status_code == 204
    session_transition(session, "RUNNING", actor="lds-webhook")
    changed = admin_client.get(poll, headers=HX)
    assert changed.status_code == 200
    assert 'data-status="RUNNING"' in changed.content.decode()


def test_polling_stops_at_terminal_states(admin_client, fleet):
    for status in ("ARCHIVED", "TERMINATED"):
        html = admin_client.get(f"/sessions/{fleet['sessions'][status].pk}/").content.decode()
        assert "hx-trigger" not in html.split('id="live"', 1)[1].split(">", 1)[0]
    html = admin_client.get(f"/sessions/{fleet['sessions']['EXPIRED'].pk}/").content.decode()
    assert "every 1s" in html


def test_list_pages_poll_with_their_filters(admin_client, fleet):
    html = admin_client.get("/sessions/?status=RUNNING&owner=cand-running").content.decode()
    poll = re.search(r'<section id="live"[^>]*hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert "status=RUNNING" in poll and "owner=cand-running" in poll
    assert admin_client.get(poll, headers=HX).status_code == 204


# --- forms ---------------------------------------------------------------------------------


def test_new_session_form_books_a_session(instructor_client, fleet):
    data = {"definition": fleet["definition"].pk, "owner": "alice", "when": "asap", "reservation_id": "R-1"}
    response = instructor_client.post("/sessions/", data)
    session = LabletSession.objects.get(reservation_id="R-1")
    assert response.status_code == 302 and response["Location"] == f"/sessions/{session.pk}/"
    assert (session.owner, session.status, session.created_by) == ("alice", "PENDING", "instructor")
    htmx = instructor_client.post("/sessions/", {**data, "reservation_id": "R-2", "owner": "bob"}, headers=HX)
    assert htmx["HX-Redirect"].startswith("/sessions/")


def test_new_session_form_shows_field_errors_and_keeps_the_input(instructor_client, fleet):
    inactive = DefinitionFactory(status="INACTIVE")
    carol = {"definition": fleet["definition"].pk, "owner": "carol"}
    cases = [
        ({"definition": "", "owner": "", "when": "asap"}, ["definition", "owner"]),
        ({"definition": inactive.pk, "owner": "carol", "when": "asap"}, ["definition"]),
        ({**carol, "when": "at"}, ["timeslot_start"]),
        ({**carol, "when": "at", "timeslot_start": "2001-01-01T10:00"}, ["timeslot_start"]),
        ({**carol, "when": "asap", "timeslot_end": "2001-01-01T10:00"}, ["timeslot_end"]),
        ({**carol, "when": "asap", "timeslot_start": "not a date"}, ["timeslot_start"]),
        ({**carol, "owner": "x" * 300, "when": "asap"}, ["owner"]),
    ]
    for data, fields in cases:
        for headers in ({}, HX):
            response = instructor_client.post("/sessions/", data, headers=headers)
            html = response.content.decode()
            assert response.status_code == 422, data
            for field in fields:
                assert f'id="id_{field}-error"' in html or f'id="id_{field}_0-error"' in html, (data, field)
            if data.get("owner") and len(data["owner"]) < 200:
                assert f'value="{data["owner"]}"' in html
    assert not LabletSession.objects.filter(owner="carol").exists()


def test_a_duplicate_reservation_points_at_the_existing_session(instructor_client, fleet):
    data = {"definition": fleet["definition"].pk, "owner": "dave", "when": "asap", "reservation_id": "R-9"}
    instructor_client.post("/sessions/", data)
    again = instructor_client.post("/sessions/", data)
    existing = LabletSession.objects.get(reservation_id="R-9")
    assert again.status_code == 422
    assert f"/sessions/{existing.pk}/" in again.content.decode()


def test_definition_upload(admin_client):
    data = {
        "name": "bgp-lab", "version": "1.0.0", "lab_yaml": DEMO_LAB, "cpu_cores": 2, "memory_gb": 4, "storage_gb": 8,
        "max_duration_minutes": 90, "status": "ACTIVE", "lab_reuse_enabled": "on", "license_affinity": ["ENTERPRISE"],
    }  # fmt: skip
    response = admin_client.post("/definitions/new/", data)
    definition = LabletDefinition.objects.get(name="bgp-lab")
    assert response.status_code == 302 and response["Location"] == f"/definitions/{definition.pk}/"
    assert (definition.node_count, definition.license_affinity, definition.created_by) == (2, ["ENTERPRISE"], "admin")
    assert (definition.grading_mode, definition.grading_enabled, definition.hold_for_review_hours) == ("none", False, 0)
    graded = {
        **data,
        "name": "graded-lab",
        "grading_mode": "manual",
        "form_qualified_name": "Exam-1",
        "pass_percent": 80,
    }
    assert admin_client.post("/definitions/new/", {**graded, "hold_for_review_hours": 4}).status_code == 302
    graded = LabletDefinition.objects.get(name="graded-lab")
    assert (graded.grading_mode, graded.grading_enabled, graded.pass_percent, graded.hold_for_review_hours) == (
        "manual", True, 80, 4,
    )  # fmt: skip
    bad = admin_client.post("/definitions/new/", {**data, "cpu_cores": "x"})
    assert bad.status_code == 422 and 'id="id_cpu_cores-error"' in bad.content.decode()
    bad = admin_client.post("/definitions/new/", {**data, "name": "ospf-lab", "version": "one", "lab_yaml": "nodes: ["})
    html = bad.content.decode()
    assert bad.status_code == 422
    assert 'id="id_version-error"' in html and 'id="id_lab_yaml-error"' in html and 'value="ospf-lab"' in html
    duplicate = admin_client.post("/definitions/new/", data)
    assert duplicate.status_code == 422 and "already exists" in duplicate.content.decode()
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("lab.yaml", DEMO_LAB.encode(), content_type="application/x-yaml")
    from_file = admin_client.post("/definitions/new/", {**data, "version": "1.1.0", "lab_yaml": "", "lab_file": upload})
    assert from_file.status_code == 302
    binary = SimpleUploadedFile("lab.yaml", b"\xff\xfe\x00", content_type="application/octet-stream")
    refused = admin_client.post("/definitions/new/", {**data, "version": "1.2.0", "lab_yaml": "", "lab_file": binary})
    assert refused.status_code == 422 and "UTF-8" in refused.content.decode()


def test_definition_status_buttons(admin_client, fleet):
    definition = fleet["definition"]
    url = f"/definitions/{definition.pk}/status/"
    admin_client.post(url, {"target": "INACTIVE", "expected": "ACTIVE"})
    definition.refresh_from_db()
    assert definition.status == "INACTIVE"
    stale = admin_client.post(url, {"target": "INACTIVE", "expected": "ACTIVE"}, follow=True)
    assert stale.status_code == 200 and "no longer applies" in stale.content.decode()
    junk = admin_client.post(url, {"target": "FLYING"}, follow=True)
    assert junk.status_code == 200 and "unknown status" in junk.content.decode()


def test_settings_page_saves_through_the_form(admin_client):
    settings_row = SystemSettings.load()
    fields = {
        name: getattr(settings_row, name)
        for name in ("idle_timeout_minutes", "min_workers_per_region", "max_workers_per_region",
                     "scale_up_cooldown_minutes", "scale_down_cooldown_minutes", "drain_timeout_minutes",
                     "placement_lead_minutes", "boot_lead_minutes", "grading_timeout_minutes", "max_extension_minutes",
                     "discovery_ami_pattern", "discovery_interval_minutes", "evidence_timeout_minutes",
                     "evidence_retention_days")
    }  # fmt: skip
    changes = {"placement_lead_minutes": 40, "autoscaling_enabled": "on", "evidence_retention_days": 90}
    response = admin_client.post("/settings/", {**fields, **changes})
    assert response.status_code == 302
    settings_row.refresh_from_db()
    assert (settings_row.placement_lead_minutes, settings_row.autoscaling_enabled) == (40, True)
    assert settings_row.evidence_retention_days == 90
    assert settings_row.updated_by == "admin"
    junk = {"min_workers_per_region": 9, "max_workers_per_region": 2, "idle_timeout_minutes": "-3"}
    bad = admin_client.post("/settings/", {**fields, **junk, "drain_timeout_minutes": "9" * 30})
    assert bad.status_code == 422
    html = bad.content.decode()
    for field in ("max_workers_per_region", "idle_timeout_minutes", "drain_timeout_minutes"):
        assert f'id="id_{field}-error"' in html, field
    settings_row.refresh_from_db()
    assert settings_row.min_workers_per_region == 0


def test_worker_create_and_admin_actions(admin_client, fleet):
    response = admin_client.post("/workers/new/", {"template": fleet["template"].pk, "name": "worker-new"})
    worker = CMLWorker.objects.get(name="worker-new")
    assert response.status_code == 302 and (worker.status, worker.cpu_cores) == ("PENDING", 16)
    bad = admin_client.post("/workers/new/", {"template": fleet["template"].pk, "name": "worker-new"})
    assert bad.status_code == 422 and "already exists" in bad.content.decode()
    generated = admin_client.post("/workers/new/", {"template": fleet["template"].pk}, follow=True)
    assert generated.status_code == 200 and "m5-enterprise-" in generated.content.decode()

    running = fleet["worker"]
    url = f"/workers/{running.pk}/actions/"
    confirmed = {"expected": "RUNNING", "confirmed": "1"}
    assert admin_client.post(url + "drain/", confirmed, headers=HX).status_code == 200
    running.refresh_from_db()
    assert running.status == WorkerStatus.DRAINING and running.drain_deadline
    assert admin_client.post(url + "drain/", confirmed, headers=HX).status_code == 409
    assert admin_client.post(url + "cancel-drain/", {"expected": "DRAINING"}, headers=HX).status_code == 200
    assert admin_client.post(url + "stop/", confirmed, headers=HX).status_code == 200
    running.refresh_from_db()
    assert (running.status, running.desired_status) == ("RUNNING", "STOPPED")
    assert admin_client.post(url + "start/", {"expected": "RUNNING"}, headers=HX).status_code == 200
    asked = admin_client.post(url + "terminate/", {"expected": "RUNNING"}, headers=HX)  # asks first
    assert asked["HX-Redirect"] == f"/workers/{running.pk}/confirm/terminate/"
    running.refresh_from_db()
    assert running.desired_status == "RUNNING"
    assert admin_client.post(url + "terminate/", confirmed, headers=HX).status_code == 200
    running.refresh_from_db()
    assert running.desired_status == "TERMINATED"
    assert admin_client.post(url + "terminate/", confirmed, headers=HX).status_code == 409
    assert admin_client.post(url + "explode/", headers=HX).status_code == 404


# --- reports and CSV -----------------------------------------------------------------------


def test_csv_export_has_one_row_per_report(admin_client, fleet):
    reports = ScoreReport.objects.count()
    assert reports == 4
    response = admin_client.get("/reports/export.csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][0] == "report_id" and len(rows) == reports + 1
    assert {r[1] for r in rows[1:]} == {str(s.pk) for s in LabletSession.objects.filter(score_reports__isnull=False)}
    assert "Routing=40.00/50.00; Security=42.00/50.00" in rows[1]
    owner = fleet["sessions"]["GRADING"].owner
    one = admin_client.get(f"/reports/export.csv?owner={owner}")
    assert len(list(csv.reader(io.StringIO(b"".join(one.streaming_content).decode())))) == 2
    assert admin_client.get("/reports/export.csv?definition=nope").status_code == 400


def test_sessions_whose_grading_failed_are_listed_under_the_reports_with_a_filter(admin_client, fleet):
    from tests.factories import GradingSessionFactory

    failed = make_session("ARCHIVED", definition=fleet["definition"], worker=fleet["worker"], owner="cand-faulted")
    ScoreReport.objects.filter(lablet_session=failed).delete()
    GradingSessionFactory(lablet_session=failed, status="FAULTED", error_message="collector down")
    html = admin_client.get("/reports/").content.decode()
    assert "Grading failed" in html and "cand-faulted" in html and "collector down" in html
    assert '<table class="reports">' in html  # the reports stay on the page
    only = admin_client.get("/reports/?show=failed").content.decode()
    assert "cand-faulted" in only and '<table class="reports">' not in only
    other = admin_client.get("/reports/?show=failed&owner=someone-else").content.decode()
    assert "cand-faulted" not in other and "No grading failed with these filters" in other


def test_csv_cells_never_start_a_formula(admin_client, fleet):
    make_session("ARCHIVED", definition=fleet["definition"], worker=fleet["worker"], owner="=HYPERLINK(1)")
    body = b"".join(admin_client.get("/reports/export.csv").streaming_content).decode()
    assert ",'=HYPERLINK(1)," in body


# --- query budgets -------------------------------------------------------------------------


def _query_counts(client, urls):
    counts = {}
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
            if getattr(response, "streaming", False):
                b"".join(response.streaming_content)
        assert response.status_code == 200, url
        counts[url] = len(queries)
    return counts


def _more_sessions(fleet, n):
    states = ["PENDING", "SCHEDULED", "RUNNING", "GRADING", "ARCHIVED", "TERMINATED"]
    for i in range(n):
        make_session(states[i % len(states)], definition=fleet["definition"], worker=fleet["worker"])


def test_query_count_per_page_does_not_grow_with_sessions(admin_client, fleet):
    urls = [u for u in page_urls(fleet)]
    urls += [
        "/sessions/?status=RUNNING,GRADING",
        "/reports/?passed=true",
        f"/sessions/{fleet['sessions']['READY'].pk}/",
    ]
    LabletSession.objects.filter(status__in=["EXPIRED", "STOPPING"]).delete()
    assert LabletSession.objects.count() == 10
    _query_counts(admin_client, urls)  # warm up: first use creates the settings row, the CSRF secret…
    small = _query_counts(admin_client, urls)
    _more_sessions(fleet, 200 - LabletSession.objects.count())
    assert LabletSession.objects.count() == 200
    large = _query_counts(admin_client, urls)
    assert small == large


# --- junk filter values -------------------------------------------------------------------

JUNK = [
    "", "nonsense", "\x00", "a\x00b", "'; DROP TABLE lablet_sessions; --", "%", "%%00", "9" * 40, "-1", "0",
    "2026-02-30", "2026-13-01T25:61", "2026-01-01", "true,false", "RUNNING,,ready", ",", "<script>x</script>",
    "x" * 5000, "😀", "../../etc/passwd", "null", "None", "[]", "{}", "1e309", "00000000-0000-0000-0000-000000000000",
]  # fmt: skip
PARAMS = [
    "status", "owner", "definition", "worker", "reservation_id", "from", "to", "date", "page", "q", "name", "region",
    "license_type", "template", "passed", "v", "new",
]  # fmt: skip


@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
def test_no_page_returns_500_for_junk_filter_values(admin_client, fleet, junk):
    from urllib.parse import urlencode

    query = urlencode(dict.fromkeys(PARAMS, junk))
    for url in page_urls(fleet):
        base = url.split("?")[0]
        for headers in ({}, HX):
            response = admin_client.get(f"{base}?{query}", headers=headers)
            assert response.status_code in (200, 204, 400), (url, junk, response.status_code)
            if response.status_code == 400:
                assert base == "/reports/export.csv"
        single = admin_client.get(f"{base}?{urlencode({'status': junk, 'page': junk})}")
        assert single.status_code in (200, 400), (url, junk)


def test_the_date_filter_is_one_utc_day(admin_client, fleet):
    today = timezone.now().strftime("%Y-%m-%d")
    html = admin_client.get(f"/sessions/?date={today}").content.decode()
    assert "cand-running" in html
    html = admin_client.get("/sessions/?date=2001-01-01").content.decode()
    assert "cand-running" not in html and "No sessions match these filters" in html


def test_boosted_requests_get_the_whole_page(admin_client, fleet):
    html = admin_client.get("/sessions/", headers={**HX, "HX-Boosted": "true"}).content.decode()
    assert html.startswith("<!doctype html>")
    fragment = admin_client.get("/sessions/", headers=HX).content.decode()
    assert fragment.lstrip().startswith('<section id="live"')


def test_invalid_filters_are_shown_as_form_errors(admin_client, fleet):
    html = admin_client.get("/sessions/?status=FLYING&definition=nope&date=2026-02-30").content.decode()
    assert "unknown status FLYING" in html
    assert "is not a date" in html
    assert "Enter a valid UUID" in html


# --- assets --------------------------------------------------------------------------------


def test_htmx_is_vendored_and_nothing_comes_from_a_cdn(admin_client, fleet):
    assert (ROOT / "static" / "vendor" / "htmx" / "htmx.min.js").stat().st_size > 10_000
    for url in page_urls(fleet):
        if url.endswith(".csv"):
            continue
        html = admin_client.get(url).content.decode()
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', html), url
        assert "/static/vendor/htmx/htmx.min.js" in html
        assert "X-CSRFToken" in html


def _status_choice_sets() -> set[type[TextChoices]]:
    """Every `*Status` choice set of the states modules (each is also bound to a one-letter alias there)."""
    return {
        value
        for module in (sessions.states, workers.states, grading.states)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, TextChoices) and value.__name__.endswith("Status")
    }


def test_every_status_has_a_badge_colour_and_every_colour_a_class():
    css = (ROOT / "static" / "lcm" / "lcm.css").read_text()
    maps = BADGE_COLOURS_BY_KIND.values()
    choice_sets = _status_choice_sets()
    assert len(choice_sets) == 10  # ... and EvidenceStatus, RegradeStatus (SPEC §9)
    for choices in choice_sets:
        assert any(set(colours) == set(choices.values) for colours in maps), choices.__name__
    for colour in {colour for colours in maps for colour in colours.values()}:
        assert f".bg-{colour} {{" in css, colour


def test_pages_take_the_badge_colour_from_the_choice_set(admin_client, fleet, monkeypatch):
    session = fleet["sessions"]["RUNNING"]
    monkeypatch.setitem(SESSION_BADGE_COLOURS, SessionStatus.RUNNING, "brown")
    monkeypatch.setitem(LAB_BADGE_COLOURS, fleet["lab"].status, "purple")
    html = admin_client.get(f"/sessions/{session.pk}/").content.decode()
    assert 'id="session-status" class="badge badge-lg bg-brown"' in html
    worker = admin_client.get(f"/workers/{fleet['worker'].pk}/").content.decode()
    assert '<span class="badge bg-purple">BOOTED</span>' in worker
    listing = admin_client.get("/sessions/?status=RUNNING").content.decode()
    assert '<span class="badge bg-brown">RUNNING</span>' in listing


def test_worker_page_shows_capacity_labs_and_ports(admin_client, fleet):
    html = admin_client.get(f"/workers/{fleet['worker'].pk}/").content.decode()
    assert 'role="meter"' in html and "edge-router_serial 2001" in html and fleet["lab"].cml_lab_id in html
    listing = admin_client.get("/workers/").content.decode()
    assert "worker-a" in listing and "worker-b" in listing and 'aria-label="CPU used"' in listing


def test_scheduler_preview_lists_every_worker(admin_client, fleet):
    WorkerFactory(name="worker-c")  # worker-a is full with the fixture's sessions
    html = admin_client.get(f"/scheduler/?definition={fleet['definition'].pk}").content.decode()
    assert "would be chosen" in html and "worker-b" in html and "not RUNNING" in html
    assert "no tick reported" in html and "placement lease" in html and "not enough cpu" in html


def test_scheduler_shows_each_loops_last_tick_and_marks_a_stale_one(admin_client, fleet):
    now = timezone.now()
    LoopHeartbeat.objects.create(name="placement", last_tick_at=now, ticks=1)
    LoopHeartbeat.objects.create(name="workers", last_tick_at=now - timedelta(hours=1), ticks=1)
    html = admin_client.get("/scheduler/").content.decode()
    placement = html[html.index("<strong>placement</strong>") :].split("</tr>")[0]
    workers = html[html.index("<strong>workers</strong>") :].split("</tr>")[0]
    assert now.strftime("%H:%M:%S") in placement and "pill" not in placement
    assert '<span class="pill">stale</span>' in workers
    assert "do not report their ticks" not in html


def test_the_candidate_link_is_copied_not_opened_and_hidden_once_running_is_over(admin_client, fleet):
    from sessions.models import UserSession

    session = fleet["sessions"]["RUNNING"]
    html = admin_client.get(f"/sessions/{session.pk}/").content.decode()
    assert 'data-copy="https://lds.example.test/login/abc"' in html and ">Copy candidate link</button>" in html
    assert 'href="https://lds.example.test/login/abc"' not in html  # nothing on the page opens it
    assert ">Open Lab<" not in html
    assert "10.0.0.5:2003" in html and "workstation" in html
    assert "min left" in html  # the live time left
    UserSession.objects.filter(lablet_session=session).update(login_url="javascript:alert(1)")
    assert "Copy candidate link" not in admin_client.get(f"/sessions/{session.pk}/").content.decode()
    UserSession.objects.filter(lablet_session=session).update(login_url="https://lds.example.test/login/abc")
    LabletSession.objects.filter(pk=session.pk).update(status="COLLECTING")
    html = admin_client.get(f"/sessions/{session.pk}/").content.decode()
    assert "Copy candidate link" not in html and "login/abc" not in html
    assert "hidden: the session has left RUNNING" in html
    assert LabletSession.objects.get(pk=session.pk).status == "COLLECTING"  # reading the page changes nothing


def test_monitor_opens_the_lab_in_cml_and_viewing_it_never_starts_the_clock(admin_client, fleet):
    session = fleet["sessions"]["READY"]
    LabletSession.objects.filter(pk=session.pk).update(cml_lab_id="lab-42")
    html = admin_client.get(f"/sessions/{session.pk}/").content.decode()
    worker = LabletSession.objects.get(pk=session.pk).worker
    assert f'href="{worker.cml_base_url.rstrip("/")}/lab/lab-42"' in html and ">Monitor</a>" in html
    assert LabletSession.objects.get(pk=session.pk).status == "READY"


def test_time_left_reads_like_a_clock():
    from lcm.templatetags.timefmt import time_left

    now = timezone.now()
    assert time_left(now + timedelta(minutes=9, seconds=1), now) == "10 min left"
    assert time_left(now + timedelta(minutes=65), now) == "1 h 05 min left"
    assert time_left(now - timedelta(seconds=1), now) == "ended" and time_left(None) == ""
