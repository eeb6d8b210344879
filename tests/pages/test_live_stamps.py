"""Live pages answer an unchanged poll from their change stamp, without rendering (lcm.live, SPEC §5.3)."""

import os
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from lcm import live
from lcm.fsm import record_change
from lcm.models import LiveStamp
from lcm.roles import INSTRUCTOR_GROUP
from sessions.models import Exam, LabletSession, SessionStatusChange
from tests.pages.conftest import make_session

HX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _stamps_read_once(settings):
    settings.LCM_LIVE_STAMP_TTL = 600  # the cached read makes the query counts below exact
    settings.LCM_LIVE_REFRESH_SECONDS = 600
    settings.LCM_LIVE_DIGEST_ONLY = False


def _poll_url(client, url):
    html = client.get(url).content.decode()
    return re.search(r'hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")


def _poll(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, headers=HX)
    return response, len(queries)


def _exam(fleet):
    now = timezone.now()
    exam = Exam.objects.create(
        name="Live exam", definition=fleet["definition"], timeslot_start=now, timeslot_end=now + timedelta(hours=1)
    )
    for status in ("READY", "RUNNING"):
        make_session(status, definition=fleet["definition"], worker=fleet["worker"], exam=exam)
    return exam


LIST_PAGES = ["/", "/sessions/", "/workers/", "/scheduler/", "/attention/", "/capacity/", "/reports/"]


@pytest.mark.parametrize("page", LIST_PAGES)
def test_an_unchanged_poll_answers_204_without_rendering_or_querying_the_data(admin_client, fleet, page):
    poll = _poll_url(admin_client, page)
    _poll(admin_client, poll)
    response, queries = _poll(admin_client, poll)
    assert response.status_code == 204
    assert queries <= 2  # the login session and its user: no page data, no stamp read (cached)
    assert not response.templates  # nothing rendered


def test_a_session_page_renders_after_its_session_changes_and_not_after_another(admin_client, fleet):
    session = fleet["sessions"]["RUNNING"]
    poll = _poll_url(admin_client, f"/sessions/{session.pk}/")
    other = fleet["sessions"]["READY"]
    LabletSession.objects.get(pk=other.pk).save()  # another session's change
    response, queries = _poll(admin_client, poll)
    assert response.status_code == 204 and not response.templates and queries <= 2
    record_change(SessionStatusChange, session_id=session.pk, to_status="RUNNING", reason="note", actor="test")
    response, _ = _poll(admin_client, poll)
    assert response.templates  # rendered again: the history shows the new row
    assert response.status_code == 200 and "note" in response.content.decode()
    response, queries = _poll(admin_client, _poll_url(admin_client, f"/sessions/{session.pk}/"))
    assert response.status_code == 204 and not response.templates


def test_an_exam_roster_renders_after_one_of_its_sessions_changes(admin_client, fleet):
    exam = _exam(fleet)
    poll = _poll_url(admin_client, f"/exams/{exam.pk}/")
    assert _poll(admin_client, poll)[0].status_code == 204
    make_session("READY", definition=fleet["definition"], worker=fleet["worker"])  # not in the exam
    response, _ = _poll(admin_client, poll)
    assert response.status_code == 204 and not response.templates
    mine = exam.sessions.filter(status="READY").get()
    LabletSession.objects.filter(pk=mine.pk).update(status="RUNNING")
    mine.refresh_from_db()
    mine.save(update_fields=["status"])  # the writers' save: post_save bumps the session and its exam
    response, _ = _poll(admin_client, poll)
    assert response.status_code == 200 and response.templates


def test_the_dashboard_re_renders_after_any_change(admin_client, fleet):
    poll = _poll_url(admin_client, "/")
    LabletSession.objects.get(pk=fleet["sessions"]["READY"].pk).save()
    response, _ = _poll(admin_client, poll)
    assert response.templates  # rendered and compared (the digest decides between 200 and 204)


def test_time_dependent_content_refreshes_after_the_refresh_interval(admin_client, fleet, settings):
    poll = _poll_url(admin_client, f"/sessions/{fleet['sessions']['RUNNING'].pk}/")
    settings.LCM_LIVE_REFRESH_SECONDS = 0
    response, _ = _poll(admin_client, poll)
    assert response.templates  # a remembered render is trusted no longer than the refresh interval


def test_the_digest_only_flag_renders_every_poll(admin_client, fleet, settings):
    poll = _poll_url(admin_client, "/")
    settings.LCM_LIVE_DIGEST_ONLY = True
    response, _ = _poll(admin_client, poll)
    assert response.status_code == 204 and response.templates


@pytest.mark.django_db(transaction=True)
def test_a_committed_change_bumps_the_stored_stamps_other_processes_read(admin_client, fleet, settings):
    exam = _exam(fleet)
    session = exam.sessions.first()
    before = dict(LiveStamp.objects.values_list("scope", "version"))
    record_change(SessionStatusChange, session_id=session.pk, to_status="READY", reason="x", actor="test")
    after = dict(LiveStamp.objects.values_list("scope", "version"))
    for scope in ("global", f"session:{session.pk}", f"exam:{exam.pk}"):  # the exam through the sessions' expander
        assert after[scope] > before.get(scope, 0), scope
    # Another process's bump reaches this one through the table once the cached read expires.
    settings.LCM_LIVE_STAMP_TTL = 0
    poll = _poll_url(admin_client, f"/sessions/{session.pk}/")
    assert _poll(admin_client, poll)[0].status_code == 204
    live._bump_committed({f"session:{session.pk}"})  # what a commit in another process does
    response, _ = _poll(admin_client, poll)
    assert response.templates


def test_an_instructors_unchanged_poll_adds_only_the_role_check(instructor_client, fleet):
    poll = _poll_url(instructor_client, f"/sessions/{fleet['sessions']['RUNNING'].pk}/")
    _poll(instructor_client, poll)
    response, queries = _poll(instructor_client, poll)
    assert response.status_code == 204 and not response.templates
    assert queries <= 3  # the login session, its user and the user's groups (the instructor role)


# --- The unchanged poll answered early (lcm.live_polls), over the per-process cache or the shared Redis one ---


@pytest.fixture(params=["local", "shared"])
def caches_kind(request, settings):
    """Both configurations: the embedded default's (database sessions, stamps from the table) and production's
    (cached_db sessions and the stamps in a Redis cache, this test run's own Redis DB)."""
    if request.param == "shared":
        db = os.environ.get("LCM_TEST_REDIS_DB", "12")
        settings.CACHES = {
            "default": {
                "BACKEND": "lcm.cache.SharedRedisCache",
                "LOCATION": f"redis://127.0.0.1:6379/{db}",
                "KEY_PREFIX": f"lcm-test-{uuid.uuid4().hex}",
            }
        }
        settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
        settings.LCM_LIVE_SHARED_STAMPS = True
    cache.clear() if request.param == "local" else None
    yield request.param
    if request.param == "shared":
        cache.delete_many(list(cache._cache.get_client().scan_iter(cache.make_key("*"))))  # noqa: SLF001


def test_an_unchanged_poll_is_answered_before_the_view_without_a_query_over_the_shared_cache(
    admin_client, fleet, caches_kind
):
    poll = _poll_url(admin_client, f"/sessions/{fleet['sessions']['RUNNING'].pk}/")
    _poll(admin_client, poll)
    response, queries = _poll(admin_client, poll)
    assert response.status_code == 204 and not response.templates
    assert queries == (0 if caches_kind == "shared" else 1)  # shared: session, user and stamps from Redis


def test_an_anonymous_poll_never_gets_204(admin_client, fleet, caches_kind):
    poll = _poll_url(admin_client, "/")
    assert _poll(admin_client, poll)[0].status_code == 204
    anonymous = Client()
    assert anonymous.get(poll, headers=HX).status_code == 302  # to the login page
    anonymous.cookies["sessionid"] = "not-a-session-key"
    assert anonymous.get(poll, headers=HX).status_code == 302
    assert admin_client.get(poll, headers=HX, HTTP_HOST="evil.example").status_code == 400  # ALLOWED_HOSTS first


def test_a_logged_out_session_never_gets_204(django_user_model, fleet, caches_kind):
    alice = django_user_model.objects.create_superuser("alice", "alice@example.com", "alice-password-1")
    browser = Client()
    browser.force_login(alice)
    poll = _poll_url(browser, "/")
    assert _poll(browser, poll)[0].status_code == 204
    stolen = Client()
    stolen.cookies["sessionid"] = browser.cookies["sessionid"].value
    assert _poll(stolen, poll)[0].status_code == 204  # the same login session, another client
    browser.post("/accounts/logout/")
    assert stolen.get(poll, headers=HX).status_code == 302  # the logout ended it everywhere


def test_a_password_change_or_deactivation_ends_early_answers(admin_client, admin_user, fleet, caches_kind):
    poll = _poll_url(admin_client, "/")
    assert _poll(admin_client, poll)[0].status_code == 204
    admin_user.set_password("another-password-2")
    admin_user.save()
    assert admin_client.get(poll, headers=HX).status_code == 302
    admin_client.force_login(admin_user)
    poll = _poll_url(admin_client, "/")
    assert _poll(admin_client, poll)[0].status_code == 204
    get_user_model().objects.filter(pk=admin_user.pk).update(is_active=False)  # a raw UPDATE: no signal
    admin_user.refresh_from_db()
    admin_user.save()  # the next save through the model drops the cached record at once
    assert admin_client.get(poll, headers=HX).status_code == 302


def test_a_demoted_instructor_gets_403_not_204(instructor_client, instructor, fleet, caches_kind):
    poll = _poll_url(instructor_client, f"/sessions/{fleet['sessions']['RUNNING'].pk}/")
    assert _poll(instructor_client, poll)[0].status_code == 204
    instructor.groups.clear()
    assert instructor_client.get(poll, headers=HX).status_code == 403
    Group.objects.get(name=INSTRUCTOR_GROUP).user_set.add(instructor)  # from the group's side
    assert instructor_client.get(poll, headers=HX).status_code in (200, 204)
    Group.objects.filter(name=INSTRUCTOR_GROUP).delete()  # no signal per member: every record is dropped
    assert instructor_client.get(poll, headers=HX).status_code == 403


def test_a_change_elsewhere_reaches_two_clients_through_the_shared_stamps(admin_client, instructor, fleet, caches_kind):
    session = fleet["sessions"]["RUNNING"]
    other = Client()
    other.force_login(instructor)
    polls = {c: _poll_url(c, f"/sessions/{session.pk}/") for c in (admin_client, other)}
    for client, poll in polls.items():
        _poll(client, poll)
        assert _poll(client, poll)[0].status_code == 204
    if caches_kind == "shared":
        cache.delete_many([live.stamp_key("global"), live.stamp_key(f"session:{session.pk}")])  # Redis restarted
        for client, poll in polls.items():
            assert _poll(client, poll)[0].status_code == 204  # re-read from the table: nothing changed
    live._bump_committed({f"session:{session.pk}"})  # what a commit in another process does
    for client, poll in polls.items():
        response, _ = _poll(client, poll)
        assert response.templates, client  # rendered again, for each of them


@pytest.mark.django_db(transaction=True)
def test_a_committed_write_is_seen_by_the_next_poll_over_the_shared_cache(admin_client, fleet, caches_kind):
    session = fleet["sessions"]["RUNNING"]
    poll = _poll_url(admin_client, f"/sessions/{session.pk}/")
    assert _poll(admin_client, poll)[0].status_code == 204
    with live._lock:
        live._local.clear()  # as if the write below ran in another process: only the committed stamps tell
    before = live.versions((f"session:{session.pk}",))[0]
    record_change(SessionStatusChange, session_id=session.pk, to_status="RUNNING", reason="seen", actor="test")
    with live._lock:
        live._local.clear()
    assert live.versions((f"session:{session.pk}",))[0] > before
    response, _ = _poll(admin_client, poll)
    assert response.status_code == 200 and "seen" in response.content.decode()


def test_a_render_in_one_web_process_answers_the_polls_another_receives(admin_client, fleet, caches_kind):
    poll = _poll_url(admin_client, f"/sessions/{fleet['sessions']['RUNNING'].pk}/")
    with live._lock:
        live._seen.clear()  # this poll reaches another process, which never rendered the page
    response, queries = _poll(admin_client, poll)
    if caches_kind == "shared":
        assert response.status_code == 204 and not response.templates  # the other process's render counts
        assert queries <= 1  # the user's auth record, read once
    else:
        assert response.templates  # rendered once here too, then answered early
        assert _poll(admin_client, poll)[0].status_code == 204
    live._bump_committed({f"session:{fleet['sessions']['RUNNING'].pk}"})
    assert _poll(admin_client, poll)[0].templates  # a shared render is only good under its stamps
