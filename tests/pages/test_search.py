"""The global search (issue 19): the top bar's box goes to `/search/?q=`, which groups sessions, workers,
definitions and exams with their counts, shows a bounded number per group with "see all" on the filtered
list page, echoes the query escaped, and costs the same queries for 10 or 200 matches."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions.models import Exam
from sessions.search_views import PER_GROUP
from tests.factories import DefinitionFactory, SessionFactory, WorkerFactory

pytestmark = pytest.mark.django_db


def group(html: str, key: str) -> str:
    match = re.search(rf'<section class="card search-group" id="results-{key}".*?</section>', html, re.S)
    assert match, key
    return match.group(0)


def count_of(html: str, key: str) -> int:
    return int(re.search(r'<span class="muted">(\d+)</span></h2>', group(html, key)).group(1))


def links(html: str, key: str, href: str) -> list[str]:
    return re.findall(rf'<li><a href="{href}">([^<]+)</a>', group(html, key))


@pytest.fixture
def world(db):
    definition = DefinitionFactory(name="Networking Basics", version="2.1.0", form_qualified_name="NET-BASICS")
    start = timezone.now() + timedelta(hours=1)
    sessions = [
        SessionFactory(definition=definition, owner="alice.net@example.com", reservation_id="RES-77-A"),
        SessionFactory(definition=definition, owner="bob@example.com", reservation_id="RES-78-B"),
    ]
    WorkerFactory(name="worker-network-1", aws_instance_id="i-0feedface0001")
    WorkerFactory(name="worker-other", aws_instance_id="i-0cafe0002")
    Exam.objects.create(
        name="Network final", definition=definition, timeslot_start=start, timeslot_end=start + timedelta(hours=1)
    )
    return {"definition": definition, "sessions": sessions}


def test_results_are_grouped_with_counts_and_links(instructor_client, world):
    response = instructor_client.get("/search/", {"q": "net"})
    assert response.status_code == 200
    html = response.content.decode()
    assert links(html, "sessions", "/sessions/[0-9a-f-]+/") == ["alice.net@example.com"]  # owner
    assert links(html, "workers", "/workers/[0-9a-f-]+/") == ["worker-network-1"]
    assert links(html, "definitions", "/definitions/[0-9a-f-]+/") == ["Networking Basics"]
    assert links(html, "exams", r"/exams/\d+/") == ["Network final"]
    assert [count_of(html, k) for k in ("sessions", "workers", "definitions", "exams")] == [1, 1, 1, 1]
    assert "<strong>4</strong> results for “net”" in html
    assert "See all" not in html  # every match is shown


def test_reservation_id_session_id_prefix_and_instance_id(instructor_client, world):
    bob = world["sessions"][1]
    html = instructor_client.get("/search/", {"q": "res-78"}).content.decode()
    assert links(html, "sessions", "/sessions/[0-9a-f-]+/") == ["bob@example.com"]
    prefix = str(bob.pk)[:8]
    html = instructor_client.get("/search/", {"q": prefix}).content.decode()
    assert "bob@example.com" in links(html, "sessions", f"/sessions/{bob.pk}/")
    html = instructor_client.get("/search/", {"q": str(bob.pk).upper()}).content.decode()  # a whole id, any case
    assert links(html, "sessions", f"/sessions/{bob.pk}/") == ["bob@example.com"]
    html = instructor_client.get("/search/", {"q": "FEEDFACE"}).content.decode()
    assert links(html, "workers", "/workers/[0-9a-f-]+/") == ["worker-network-1"]
    assert count_of(html, "sessions") == 0 and "No sessions match." in html


def test_each_group_is_bounded_and_see_all_opens_the_filtered_list(instructor_client, world):
    for i in range(PER_GROUP + 5):
        SessionFactory(definition=world["definition"], owner=f"many-{i:02d}@example.com")
    html = instructor_client.get("/search/", {"q": "many-"}).content.decode()
    assert len(links(html, "sessions", "/sessions/[0-9a-f-]+/")) == PER_GROUP
    assert count_of(html, "sessions") == PER_GROUP + 5
    see_all = re.search(r'<a class="see-all" href="([^"]+)">See all 15 sessions</a>', html).group(1)
    assert see_all == "/sessions/?q=many-"
    listed = instructor_client.get(see_all.replace("&amp;", "&")).content.decode()
    assert "<strong>15</strong> of" in listed  # the list page finds the same rows


@pytest.mark.parametrize("q", ["", "   ", "\t"])
def test_an_empty_or_blank_query_shows_a_hint(instructor_client, world, q):
    response = instructor_client.get("/search/", {"q": q})
    html = response.content.decode()
    assert response.status_code == 200 and "search-hint" in html and "search-group" not in html
    assert 'role="alert"' not in html
    assert instructor_client.get("/search/").status_code == 200  # no q at all


def test_an_overlong_query_is_a_form_error(instructor_client, world):
    response = instructor_client.get("/search/", {"q": "x" * 300})
    html = response.content.decode()
    assert response.status_code == 200 and 'role="alert"' in html and "at most 200 characters" in html
    assert "search-group" not in html


def test_the_query_is_echoed_escaped(instructor_client, world):
    attack = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    html = instructor_client.get("/search/", {"q": attack}).content.decode()
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # in the summary, the title and both boxes
    assert 'value="&quot;&gt;&lt;script&gt;' in html
    assert html.count('value="&quot;&gt;&lt;script&gt;') == 2  # the page's box and the top bar's


def test_instructors_may_search_anonymous_users_are_sent_to_log_in(client, instructor_client, world):
    assert instructor_client.get("/search/?q=net").status_code == 200
    client.logout()
    response = client.get("/search/?q=net")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_user_without_a_role_gets_403(client, django_user_model, world):
    client.force_login(django_user_model.objects.create_user("student", "s@example.com", "pw-student-1"))
    assert client.get("/search/?q=net").status_code == 403


def test_the_top_bar_has_a_labelled_search_box_on_every_page(instructor_client, world):
    for url in ("/", "/sessions/", "/workers/", "/search/?q=net"):
        html = instructor_client.get(url).content.decode()
        assert '<form class="topsearch" method="get" action="/search/" role="search"' in html, url
        assert '<label for="top-q" class="visually-hidden">' in html, url


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_query_count_is_the_same_for_10_and_200_matches(instructor_client):
    start = timezone.now() + timedelta(hours=1)

    def add(n, offset):
        definition = DefinitionFactory(name=f"match-def-{offset}")
        for i in range(offset, offset + n):
            SessionFactory(definition=definition, owner=f"match-{i}", reservation_id=f"match-res-{i}")
            WorkerFactory(name=f"match-worker-{i}")
            Exam.objects.create(
                name=f"match exam {i}", definition=definition, timeslot_start=start,
                timeslot_end=start + timedelta(hours=1),
            )  # fmt: skip
        for i in range(offset, offset + n // 10):
            DefinitionFactory(name=f"match-more-{i}")

    urls = ["/search/?q=match", "/search/?q=match-1", "/search/?q=nothing"]
    add(10, 0)
    [_queries(instructor_client, u) for u in urls]  # warm up
    small = [_queries(instructor_client, u) for u in urls]
    add(190, 10)
    large = [_queries(instructor_client, u) for u in urls]
    assert small == large
    html = instructor_client.get("/search/?q=match").content.decode()
    assert count_of(html, "sessions") == 200 and count_of(html, "workers") == 200 and count_of(html, "exams") == 200
