"""Readable time (issue 19): `<time>` elements the browser shows in the user's zone, relative times,
24-h ISO date-time fields on the booking, exam and extend forms, and 24-h formats in the admin."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from lcm.templatetags.timefmt import relative, slot_relative, when
from sessions.exam_forms import ExamForm
from sessions.forms import ExtendForm, SessionCreateForm
from tests.pages.conftest import make_session

pytestmark = pytest.mark.django_db

MOMENT = datetime(2026, 12, 5, 14, 30, 7, tzinfo=UTC)


def test_when_emits_a_time_element_with_the_utc_value_in_the_tooltip():
    html = str(when(MOMENT, "Y-m-d H:i"))
    assert html == (
        '<time datetime="2026-12-05T14:30:07Z" title="2026-12-05 14:30:07 UTC" data-fmt="Y-m-d H:i">'
        "2026-12-05 14:30</time>"
    )
    assert when(None) == "" and when(datetime(2026, 1, 2).date(), "Y-m-d") == "2026-01-02"


def test_relative_times_name_the_direction_and_the_verb():
    now = MOMENT
    assert relative(now + timedelta(minutes=12, seconds=5), now, "starts|started") == "starts in 12 min"
    assert relative(now - timedelta(minutes=3, seconds=1), now, "ends|ended") == "ended 3 min ago"
    assert relative(now + timedelta(hours=2, minutes=5, seconds=1), now) == "in 2 h 05 min"
    assert relative(now - timedelta(days=3), now) == "3 days ago"
    assert relative(now + timedelta(seconds=20), now, "starts|started") == "starts now"
    soon, later = timezone.now() + timedelta(minutes=30), timezone.now() + timedelta(minutes=90)
    assert re.search(r">starts in (29|30) min<", str(slot_relative(soon, later)))
    assert "ends in" in str(slot_relative(timezone.now() - timedelta(minutes=5), later))


def test_pages_render_times_as_time_elements(admin_client):
    session = make_session("RUNNING", owner="cand-time")
    html = admin_client.get(f"/sessions/{session.pk}/").content.decode()
    created = timezone.localtime(session.created_at, UTC)
    assert f'<time datetime="{created.isoformat().replace("+00:00", "Z")}"' in html
    assert re.search(r'<time datetime="[^"]+" title="[^"]+ UTC" data-rel="(starts\|started|ends\|ended)">', html)
    dashboard = admin_client.get("/").content.decode()
    assert 'id="theme-choice"' in dashboard and 'id="tz-choice"' in dashboard
    assert "/static/lcm/theme.js" in dashboard and "/static/lcm/prefs.js" in dashboard


@pytest.mark.parametrize("form_class", [SessionCreateForm, ExamForm, ExtendForm])
def test_date_time_fields_are_24h_iso_text_not_a_locale_picker(form_class):
    html = str(form_class())
    fields = re.findall(r'<input[^>]*name="timeslot_(?:start|end)"[^>]*>', html)
    assert fields
    for field in fields:
        assert 'type="text"' in field and 'placeholder="YYYY-MM-DD HH:MM"' in field and "pattern=" in field
        assert "datetime-local" not in field


def test_both_iso_spellings_parse_as_utc():
    field = SessionCreateForm().fields["timeslot_start"]
    assert field.clean("2026-12-05 14:30") == field.clean("2026-12-05T14:30") == MOMENT.replace(second=0)
    assert 'value="2026-12-05 14:30"' in str(SessionCreateForm(initial={"timeslot_start": MOMENT})["timeslot_start"])


def test_the_admin_shows_24h_iso_times(admin_client):
    session = make_session("RUNNING", owner="cand-admin")
    afternoon = datetime(2026, 12, 5, 15, 4, tzinfo=UTC)
    type(session).objects.filter(pk=session.pk).update(timeslot_start=afternoon, created_at=afternoon)
    opts = type(session)._meta
    html = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[session.pk])).content
    html += admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")).content
    html = html.decode()
    assert not re.search(r"\d (a\.m\.|p\.m\.)", html)
    assert "2026-12-05" in html and ("15:04" in html)
