"""Issue 19, safe actions and discoverability: every destructive or candidate-affecting button asks first, naming
what it touches (a dialog with JavaScript, a confirm page without; an unconfirmed post changes nothing); Requeue
explains itself and can keep the session off the worker it leaves, which the real placement tick honours; the
help page, the add-worker page, the definition form's help and "New version from this"."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from scheduling.scheduler import place_pending
from sessions.models import LabletDefinition
from tests.factories import DEMO_LAB, DefinitionFactory, SessionFactory, WorkerFactory
from tests.pages.conftest import make_session

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}
ROOT = Path(__file__).resolve().parent.parent.parent


def _buttons_form(html: str, slug: str) -> str:
    block = html.split('id="session-actions"', 1)[1].split("</section>", 1)[0]
    return re.search(rf'<form[^>]*/(?:actions|confirm)/{slug}/"[^>]*>', block).group(0)


def test_the_session_buttons_ask_first_naming_the_candidate_and_the_worker(admin_client, fleet):
    running = fleet["sessions"]["RUNNING"]
    html = admin_client.get(f"/sessions/{running.pk}/").content.decode()
    finish, terminate = _buttons_form(html, "finish"), _buttons_form(html, "terminate")
    assert 'hx-confirm="Finish the session of cand-running? The candidate loses access to the lab on worker-a' in finish
    assert "Terminate this session? cand-running&#x27;s lab on worker-a is torn down" in terminate
    for form in (finish, terminate):
        assert """hx-vals='{"confirmed": "1"}'""" in form
    start = _buttons_form(admin_client.get(f"/sessions/{fleet['sessions']['READY'].pk}/").content.decode(), "start")
    assert "hx-confirm" not in start  # starting takes nothing away
    scheduled = admin_client.get(f"/sessions/{fleet['sessions']['SCHEDULED'].pk}/").content.decode()
    assert f'<form method="get" action="/sessions/{fleet["sessions"]["SCHEDULED"].pk}/confirm/requeue/">' in scheduled
    for status, slug in (("COLLECTING", "skip-grading"), ("GRADING", "complete-grading"), ("STOPPED", "archive")):
        page = admin_client.get(f"/sessions/{fleet['sessions'][status].pk}/").content.decode()
        assert "hx-confirm=" in _buttons_form(page, slug), slug


@pytest.mark.parametrize(
    ("status", "slug", "target", "words"),
    [
        ("RUNNING", "finish", "COLLECTING", "loses access to the lab on worker-a"),
        ("RUNNING", "terminate", "TERMINATED", "This cannot be undone"),
        ("COLLECTING", "skip-grading", "STOPPING", "No score is recorded"),
    ],
)
def test_an_unconfirmed_post_changes_nothing_and_the_confirm_page_does_it(
    admin_client, fleet, status, slug, target, words
):
    session = fleet["sessions"][status]
    url = f"/sessions/{session.pk}/actions/{slug}/"
    plain = admin_client.post(url, {"expected": status})
    html = plain.content.decode()
    assert plain.status_code == 200 and 'id="confirm"' in html and words in html
    assert session.owner in html and "worker-a" in html and 'name="confirmed" value="1"' in html
    htmx = admin_client.post(url, {"expected": status}, headers=HX)
    assert htmx["HX-Redirect"] == f"/sessions/{session.pk}/confirm/{slug}/"
    session.refresh_from_db()
    assert session.status == status  # nothing happened
    assert words in admin_client.get(htmx["HX-Redirect"]).content.decode()

    done = admin_client.post(url, {"expected": status, "confirmed": "1"}, follow=True)
    assert done.status_code == 200
    session.refresh_from_db()
    assert session.status == target
    last = session.history.order_by("-at", "-id").first()
    assert last.actor == "admin" and "from the session page" in last.reason


def test_complete_grading_without_javascript_carries_the_score_through_its_confirm_page(admin_client, fleet):
    session = make_session("GRADING", definition=fleet["definition"], worker=fleet["worker"], with_children=False)
    score = {"score": "7", "max_score": "10", "cut_score": "6"}
    url = f"/sessions/{session.pk}/actions/complete-grading/"
    page = admin_client.post(url, {"expected": "GRADING", **score}).content.decode()
    for name, value in score.items():
        assert f'<input type="hidden" name="{name}" value="{value}">' in page
    session.refresh_from_db()
    assert session.status == "GRADING"
    admin_client.post(url, {"expected": "GRADING", "confirmed": "1", **score})
    session.refresh_from_db()
    assert (session.status, session.grade_result) == ("STOPPING", "PASS")


def test_the_confirm_page_of_a_button_that_no_longer_applies_says_so(admin_client, fleet):
    pending = fleet["sessions"]["PENDING"]
    response = admin_client.get(f"/sessions/{pending.pk}/confirm/finish/", follow=True)
    assert "no longer applies" in response.content.decode()
    assert admin_client.get(f"/sessions/{pending.pk}/confirm/start/").status_code == 404  # does not ask
    assert admin_client.get(f"/sessions/{pending.pk}/confirm/fly/").status_code == 404


def test_requeue_explains_itself_and_can_exclude_the_worker(admin_client, fleet):
    session = fleet["sessions"]["SCHEDULED"]
    page = admin_client.get(f"/sessions/{session.pk}/confirm/requeue/").content.decode()
    assert "goes back to <strong>PENDING</strong>" in page and "next placement tick places it again" in page
    assert "lab was not started yet" in page and "Requeue when the worker" in page
    assert 'name="exclude_worker" value="1"' in page and "Do not place it on worker-a again" in page

    assert admin_client.post(f"/sessions/{session.pk}/actions/requeue/", {"expected": "SCHEDULED"}).status_code == 200
    session.refresh_from_db()
    assert session.status == "SCHEDULED"  # asked, did nothing

    admin_client.post(
        f"/sessions/{session.pk}/actions/requeue/", {"expected": "SCHEDULED", "confirmed": "1", "exclude_worker": "1"}
    )
    session.refresh_from_db()
    assert (session.status, session.worker_id, session.excluded_worker_id) == ("PENDING", None, fleet["worker"].pk)
    reason = session.history.order_by("-at", "-id").first().reason
    assert reason == "requeued from the session page; not to be placed on worker-a again"


def _scheduled_on(worker_name: str):
    definition = DefinitionFactory(cpu_cores=2, memory_gb=2, storage_gb=2)
    session = SessionFactory(definition=definition, timeslot_start=timezone.now() + timedelta(minutes=5))
    report = place_pending(require_leader=False)
    assert report.placed == [(str(session.pk), worker_name)]
    return session


def test_the_placement_tick_puts_a_requeued_session_elsewhere_and_never_back(admin_client):
    WorkerFactory(name="w-full", cpu_cores=64)  # the fuller-ranked, bigger one is chosen first
    other = WorkerFactory(name="w-other", cpu_cores=8)
    session = _scheduled_on("w-full")
    admin_client.post(
        f"/sessions/{session.pk}/actions/requeue/", {"expected": "SCHEDULED", "confirmed": "1", "exclude_worker": "1"}
    )
    report = place_pending(require_leader=False)
    assert report.placed == [(str(session.pk), "w-other")]
    session.refresh_from_db()
    assert (session.status, session.worker_id) == ("SCHEDULED", other.pk)
    assert session.history.filter(to_status="SCHEDULED", reason__startswith="placed on w-other").exists()

    # Requeued again without the box: the exclusion is forgotten, the best fit is the big worker again.
    admin_client.post(f"/sessions/{session.pk}/actions/requeue/", {"expected": "SCHEDULED", "confirmed": "1"})
    session.refresh_from_db()
    assert session.excluded_worker_id is None
    assert place_pending(require_leader=False).placed == [(str(session.pk), "w-full")]


def test_with_no_other_worker_the_requeued_session_waits_saying_why(admin_client, instructor_client):
    WorkerFactory(name="w-only", cpu_cores=64)
    session = _scheduled_on("w-only")
    response = instructor_client.post(
        f"/api/v1/sessions/{session.pk}/requeue", {"exclude_worker": True}, content_type="application/json"
    )
    assert response.status_code == 200
    session.refresh_from_db()
    assert session.status == "PENDING" and session.excluded_worker.name == "w-only"
    report = place_pending(require_leader=False)
    assert report.placed == [] and report.waiting == [(str(session.pk), "no worker fits (w-only: excluded by requeue)")]
    page = admin_client.get(f"/sessions/{session.pk}/").content.decode()
    assert "no worker fits (w-only: excluded by requeue)" in page  # the placement preview's reason
    assert '<span class="pill" id="excluded-worker">never on w-only (requeued)</span>' in page
    assert "w-only: excluded by requeue" in admin_client.get("/scheduler/").content.decode()


def test_rest_requeue_takes_exclude_worker_and_refuses_junk(instructor_client):
    session = SessionFactory(status="SCHEDULED", worker=WorkerFactory(name="w-rest"))
    bad = instructor_client.post(
        f"/api/v1/sessions/{session.pk}/requeue", {"exclude_worker": "perhaps"}, content_type="application/json"
    )
    assert bad.status_code == 400 and "exclude_worker" in bad.json()
    session.refresh_from_db()
    assert session.status == "SCHEDULED"
    ok = instructor_client.post(
        f"/api/v1/sessions/{session.pk}/requeue",
        {"exclude_worker": True, "reason": "worker slow"},
        content_type="application/json",
    )
    assert ok.status_code == 200 and ok.json()["status"] == "PENDING"
    assert session.history.filter(reason="worker slow; not to be placed on w-rest again").exists()


def test_archiving_a_definition_asks_first_without_javascript(admin_client, fleet):
    definition = fleet["definition"]
    detail = admin_client.get(f"/definitions/{definition.pk}/").content.decode()
    assert 'hx-confirm="Archive' in detail and """hx-vals='{"confirmed": "1"}'""" in detail
    url = f"/definitions/{definition.pk}/status/"
    asked = admin_client.post(url, {"target": "ARCHIVED", "expected": "ACTIVE"})
    assert asked.status_code == 200 and "cannot be re-activated" in asked.content.decode()
    definition.refresh_from_db()
    assert definition.status == "ACTIVE"
    admin_client.post(url, {"target": "ARCHIVED", "expected": "ACTIVE", "confirmed": "1"})
    definition.refresh_from_db()
    assert definition.status == "ARCHIVED"


def test_the_definition_form_helps_and_keeps_an_uploaded_yaml_after_an_error(admin_client):
    page = admin_client.get("/definitions/new/").content.decode()
    assert "Form qualified name</strong>: the content id" in page
    assert '<details id="sample-yaml"><summary>A sample lab YAML</summary>' in page
    upload = SimpleUploadedFile("lab.yaml", DEMO_LAB.encode())
    refused = admin_client.post(
        "/definitions/new/",
        {"name": "kept-yaml", "version": "not a version", "cpu_cores": "1", "memory_gb": "1", "storage_gb": "1",
         "max_duration_minutes": "60", "status": "ACTIVE", "grading_mode": "none", "lab_file": upload},
    )  # fmt: skip
    assert refused.status_code == 422
    textarea = re.search(r'<textarea name="lab_yaml"[^>]*>(.*?)</textarea>', refused.content.decode(), re.S)
    assert textarea and "nodes:" in textarea.group(1)  # the upload is there to submit again, no re-upload
    assert not LabletDefinition.objects.filter(name="kept-yaml").exists()


def test_new_version_from_a_definition_prefills_the_form(admin_client, fleet):
    definition = fleet["definition"]
    detail = admin_client.get(f"/definitions/{definition.pk}/").content.decode()
    assert f'href="/definitions/new/?from={definition.pk}">New version from this</a>' in detail
    form = admin_client.get(f"/definitions/new/?from={definition.pk}")
    html = form.context["form"]
    assert html["name"].value() == "ccna-lab" and html["version"].value() == ""
    assert html["grading_mode"].value() == "manual" and html["hold_for_review_hours"].value() == 2
    assert "New version of ccna-lab" in form.content.decode()
    assert admin_client.get("/definitions/new/?from=nonsense").status_code == 200  # an empty form


def test_the_add_worker_form_has_a_page_of_its_own_for_admins(admin_client, instructor_client, fleet):
    page = admin_client.get("/workers/new/")
    assert page.status_code == 200 and 'name="template"' in page.content.decode()
    assert instructor_client.get("/workers/new/").status_code == 403
    bad = admin_client.post("/workers/new/", {"template": fleet["template"].pk, "name": "worker-a", "from_page": "1"})
    assert bad.status_code == 422 and "<h1>New worker</h1>" in bad.content.decode()


def test_the_help_page_lists_every_command_and_the_api_docs(instructor_client):
    html = instructor_client.get("/help/").content.decode()
    assert 'href="/api/docs/"' in html and 'href="/api/schema/"' in html
    shipped = {p.stem for p in ROOT.glob("*/management/commands/[a-z]*.py")}
    assert len(shipped) > 20
    for name in shipped:
        assert f'<td class="mono nowrap">{name}</td>' in html, name
    dashboard = instructor_client.get("/").content.decode()
    assert '<footer class="sitefoot"><a href="/help/"' in dashboard and 'href="/api/docs/">API docs</a>' in dashboard


def test_the_readme_lists_every_command(db):
    readme = (ROOT / "README.md").read_text()
    for path in ROOT.glob("*/management/commands/[a-z]*.py"):
        assert f"`{path.stem}`" in readme, path.stem
    assert "/api/docs/" in readme


def test_the_capacity_page_shows_times_in_the_users_zone(instructor_client):
    WorkerFactory()
    SessionFactory(timeslot_start=timezone.now() + timedelta(hours=2))
    html = instructor_client.get("/capacity/").content.decode()
    peak = re.search(r"Peak demand</dt><dd>(.*?)</dd>", html, re.S).group(1)
    assert "<time datetime=" in peak and 'data-fmt="D H:i"' in peak
