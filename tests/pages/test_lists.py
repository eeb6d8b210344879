"""Every list page like the session list (issue 19, "lists like NetBox's"): workers, definitions, exams,
score reports and the scheduler's queue have a substring search, column sorting that stays stable across
pages, an unknown sort key shown as a form error, bounded page sizes, "N of M" counts, and a query count
that does not grow with the rows. Each list is described once (`LISTS`); the tests run over all of them."""

import re
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction
from itertools import count

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from grading.models import ScoreReport
from lcm.versions import version_key
from sessions.models import Exam, LabletDefinition, LabletSession
from sessions.states import DefinitionStatus, SessionStatus, capacity_holding_q
from tests.factories import DefinitionFactory, ScoreReportFactory, SessionFactory, TemplateFactory, WorkerFactory
from workers.models import CMLWorker
from workers.states import WorkerStatus

pytestmark = pytest.mark.django_db

UUID = "[0-9a-f-]{36}"
_seq = count()


def _rowlink(href: str) -> re.Pattern:
    return re.compile(rf'<a class="rowlink" href="{href}">([^<]+)</a>')


# ---- how each list's rows are made, read back, and ordered -------------------------------------------------


def make_workers(n, prefix="wk"):
    templates = [TemplateFactory(name=f"tpl-{c}-{next(_seq)}") for c in "ab"]
    statuses = ["RUNNING", "STOPPED", "PENDING", "DRAINING", "FAILED"]
    definition = DefinitionFactory()
    for i in range(n):
        worker = WorkerFactory(
            name=f"{prefix}-{(i * 7) % n:03d}-{next(_seq)}",
            status=statuses[i % len(statuses)],
            region=["us-east-1", "eu-west-1", "ap-south-1"][i % 3],
            template=templates[i % 2] if i % 4 else None,
            aws_instance_id=f"i-0{next(_seq):07d}beef",
        )
        for _ in range(i % 3 if n <= 60 else 0):  # sessions holding capacity: a few ties of 0, 1 and 2
            SessionFactory(definition=definition, worker=worker, status="RUNNING")


def worker_order(key):
    ranks = WorkerStatus.values
    holding = {
        w.pk: w.sessions.filter(capacity_holding_q()).count()
        for w in CMLWorker.objects.prefetch_related("sessions").all()
    }
    value = {
        "name": lambda w: (w.name,),
        "status": lambda w: (ranks.index(w.status), w.name),
        "region": lambda w: (w.region, w.name),
        # PostgreSQL sorts NULL last going up.
        "template": lambda w: ((1, "") if w.template is None else (0, w.template.name), w.name),
        "sessions": lambda w: (holding[w.pk], w.name),
    }[key]
    return [w.name for w in sorted(CMLWorker.objects.select_related("template"), key=value)]


def make_definitions(n, prefix="def"):
    statuses = DefinitionStatus.values
    for i in range(n):
        DefinitionFactory(
            name=f"{prefix}-{(i * 7) % n:03d}-{next(_seq)}",
            version=f"1.{(i * 5) % 12}.0",  # 1.10.0 after 1.9.0: numbers, not text
            status=statuses[i % len(statuses)],
            form_qualified_name=f"FQN-{prefix.upper()}-{i}",
        )


def definition_order(key):
    ranks = DefinitionStatus.values
    value = {
        "name": lambda d: (d.name, d.created_at, d.pk),
        "version": lambda d: (version_key(d.version), d.created_at, d.pk),
        "status": lambda d: (ranks.index(d.status), d.created_at, d.pk),
        "created": lambda d: (d.created_at, d.pk),
    }[key]
    return [d.name for d in sorted(LabletDefinition.objects.all(), key=value)]


def make_exams(n, prefix="exam"):
    definition = DefinitionFactory()
    base = timezone.now() + timedelta(days=1)
    for i in range(n):
        start = base + timedelta(hours=(i * 11) % 9)  # ties
        exam = Exam.objects.create(
            name=f"{prefix}-{(i * 7) % n:03d}-{next(_seq)}",
            definition=definition,
            timeslot_start=start,
            timeslot_end=start + timedelta(hours=1),
        )
        for _ in range(i % 3 if n <= 60 else 0):
            SessionFactory(definition=definition, exam=exam, timeslot_start=start)


def exam_order(key):
    value = {
        "name": lambda e: (e.name, e.pk),
        "start": lambda e: (e.timeslot_start, e.pk),
        "size": lambda e: (e.sessions.count(), e.pk),
    }[key]
    return [e.name for e in sorted(Exam.objects.all(), key=value)]


def make_reports(n, prefix="rep"):
    definition = DefinitionFactory(name=f"{prefix}-course-{next(_seq)}")
    for i in range(n):
        session = SessionFactory(definition=definition, owner=f"{prefix}-{(i * 7) % n:03d}-{next(_seq)}")
        maximum = [100, 50, 200][i % 3]
        score = [maximum // 2, maximum, maximum // 4, 0][i % 4]  # equal shares of different maxima: ties
        ScoreReportFactory(lablet_session=session, score=score, max_score=maximum, passed=score * 2 >= maximum)


def report_order(key):
    value = {
        "date": lambda r: (r.created_at, r.pk),
        "score": lambda r: (Fraction(r.score) / Fraction(r.max_score), r.created_at, r.pk),
        "pass": lambda r: (r.passed, r.created_at, r.pk),
    }[key]
    reports = ScoreReport.objects.select_related("lablet_session")
    return [r.lablet_session.owner for r in sorted(reports, key=value)]


def make_queue(n, prefix="q"):
    definition = DefinitionFactory()
    base = timezone.now() + timedelta(days=2)  # past the placement lead: no placement preview is asked
    for i in range(n):
        SessionFactory(
            definition=definition,
            status="PENDING",
            owner=f"{prefix}-{(i * 7) % n:03d}-{next(_seq)}",
            reservation_id=f"RES-{prefix.upper()}-{i:04d}-{next(_seq)}",
            timeslot_start=base + timedelta(minutes=(i * 11) % 9),
        )


def queue_order(key):
    value = {
        "timeslot": lambda s: (s.timeslot_start, s.created_at, s.pk),
        "owner": lambda s: (s.owner, s.created_at, s.pk),
        "created": lambda s: (s.created_at, s.pk),
    }[key]
    return [s.owner for s in sorted(LabletSession.objects.filter(status=SessionStatus.PENDING), key=value)]


@dataclass(frozen=True)
class ListPage:
    url: str
    row: re.Pattern
    make: object  # make(n, prefix)
    order: object  # order(key) -> names ascending
    sort_keys: tuple
    search: tuple  # (field set by make: a substring of it finds the row)
    sizes: tuple = (25, 50, 100, 200)
    noun: str = ""


LISTS = {
    "workers": ListPage(
        "/workers/", _rowlink(f"/workers/{UUID}/"), make_workers, worker_order,
        ("name", "status", "region", "template", "sessions"), ("name", "instance id", "region"), noun="workers",
    ),
    "definitions": ListPage(
        "/definitions/", _rowlink(f"/definitions/{UUID}/"), make_definitions, definition_order,
        ("name", "version", "status", "created"), ("name", "version", "form name"), noun="definitions",
    ),
    "exams": ListPage(
        "/exams/", _rowlink(r"/exams/\d+/"), make_exams, exam_order, ("name", "start", "size"), ("name",),
        noun="exams",
    ),
    "reports": ListPage(
        "/reports/", _rowlink(f"/sessions/{UUID}/"), make_reports, report_order, ("date", "score", "pass"),
        ("owner", "definition"), noun="score reports",
    ),
    "scheduler": ListPage(
        "/scheduler/", _rowlink(f"/sessions/{UUID}/"), make_queue, queue_order, ("timeslot", "owner", "created"),
        ("owner", "reservation"), sizes=(20, 50, 100, 200), noun="pending sessions",
    ),
}  # fmt: skip


def rows(client, spec: ListPage, query: str) -> list[str]:
    response = client.get(f"{spec.url}?{query}")
    assert response.status_code == 200, query
    return spec.row.findall(response.content.decode())


def all_pages(client, spec: ListPage, query: str) -> list[str]:
    found, page = [], 1
    while True:
        response = client.get(f"{spec.url}?{query}&page={page}")
        assert response.status_code == 200
        html = response.content.decode()
        found += spec.row.findall(html)
        if 'rel="next"' not in html:
            return found
        page += 1
        assert page < 50


# ---- search --------------------------------------------------------------------------------------------------


def test_workers_search_name_instance_id_region_and_address(instructor_client):
    WorkerFactory(name="Edge-Paris-01", aws_instance_id="i-0abc123def", region="eu-west-3", public_ip="10.9.8.7")
    WorkerFactory(name="core-tokyo", aws_instance_id="i-0fff999", region="ap-northeast-1")
    spec = LISTS["workers"]
    assert rows(instructor_client, spec, "q=paris") == ["Edge-Paris-01"]  # case-insensitive substring
    assert rows(instructor_client, spec, "q=ABC123") == ["Edge-Paris-01"]  # instance id
    assert rows(instructor_client, spec, "q=northeast") == ["core-tokyo"]  # region
    assert rows(instructor_client, spec, "q=9.8") == ["Edge-Paris-01"]  # address
    assert sorted(rows(instructor_client, spec, "q=i-0")) == ["Edge-Paris-01", "core-tokyo"]
    assert rows(instructor_client, spec, "q=nothing-like-it") == []
    assert len(rows(instructor_client, spec, "q=%20%20")) == 2  # blank: no filter


def test_definitions_search_name_version_and_form_name(instructor_client):
    DefinitionFactory(name="CCNA Routing", version="2.10.1", form_qualified_name="Cisco-CCNA-Exam")
    DefinitionFactory(name="Security basics", version="1.0.0", form_qualified_name="Sec-101")
    spec = LISTS["definitions"]
    assert rows(instructor_client, spec, "q=routing") == ["CCNA Routing"]
    assert rows(instructor_client, spec, "q=2.10") == ["CCNA Routing"]
    assert rows(instructor_client, spec, "q=sec-1") == ["Security basics"]
    assert rows(instructor_client, spec, "q=cisco-ccna") == ["CCNA Routing"]


def test_exams_search_name(instructor_client):
    make_exams(3, prefix="Networking")
    make_exams(2, prefix="Security")
    spec = LISTS["exams"]
    assert len(rows(instructor_client, spec, "q=network")) == 3
    assert all(name.startswith("Security") for name in rows(instructor_client, spec, "q=CURITY"))


def test_reports_search_owner_and_definition(instructor_client):
    make_reports(3, prefix="alice")
    make_reports(2, prefix="bob")
    spec = LISTS["reports"]
    assert len(rows(instructor_client, spec, "q=ALI")) == 3  # owner
    assert len(rows(instructor_client, spec, "q=bob-course")) == 2  # definition name
    assert rows(instructor_client, spec, "q=carol") == []


def test_scheduler_queue_search_owner_and_reservation(instructor_client):
    make_queue(3, prefix="alice")
    make_queue(2, prefix="bob")
    spec = LISTS["scheduler"]
    assert len(rows(instructor_client, spec, "q=alice")) == 3
    assert len(rows(instructor_client, spec, "q=res-bob")) == 2


# ---- sorting, errors, sizes, counts: every list -------------------------------------------------------------


@pytest.mark.parametrize("name", LISTS)
def test_sorting_every_column_is_stable_across_pages_both_ways(instructor_client, name):
    spec = LISTS[name]
    spec.make(55)
    size = spec.sizes[0]
    for key in spec.sort_keys:
        up = all_pages(instructor_client, spec, f"sort={key}&page_size={size}")
        assert len(up) == 55 and len(set(up)) == 55, key  # nothing repeated or lost between pages
        assert up == spec.order(key), key
        down = all_pages(instructor_client, spec, f"sort=-{key}&page_size={size}")
        assert down == up[::-1], key


@pytest.mark.parametrize("name", LISTS)
def test_column_headers_sort_with_aria_sort_and_keep_the_search(instructor_client, name):
    spec = LISTS[name]
    spec.make(3)
    key = spec.sort_keys[1]
    html = instructor_client.get(f"{spec.url}?q=-&sort={key}").content.decode()
    assert 'aria-sort="ascending"' in html or 'aria-current="true"' in html  # the cards' sort bar
    assert f'href="?q=-&amp;sort=-{key}"' in html  # the current column sorts the other way next, search kept
    assert f'href="?q=-&amp;sort={spec.sort_keys[0]}"' in html
    assert f'<input type="hidden" name="sort" value="{key}">' in html
    assert '<label for="f-q">Search</label>' in html


@pytest.mark.parametrize("name", LISTS)
@pytest.mark.parametrize("sort", ["password", "-", "--name", "name;drop", "id", "x" * 600, "na\x00mex"])
def test_an_unknown_sort_key_is_a_form_error_not_a_500(instructor_client, name, sort):
    spec = LISTS[name]
    spec.make(3)
    response = instructor_client.get(spec.url, {"sort": sort})
    assert response.status_code == 200
    html = response.content.decode()
    assert "unknown sort key" in html and 'role="alert"' in html
    assert len(spec.row.findall(html)) == 3  # listed in the default order


@pytest.mark.parametrize("name", LISTS)
@pytest.mark.parametrize("size", ["0", "-1", "10000", "abc", "1e3", "25.0", "7"])
def test_the_page_size_is_bounded(instructor_client, name, size):
    spec = LISTS[name]
    spec.make(3)
    response = instructor_client.get(spec.url, {"page_size": size})
    html = response.content.decode()
    assert response.status_code == 200 and "rows per page" in html and len(spec.row.findall(html)) == 3


@pytest.mark.parametrize("name", LISTS)
def test_the_page_size_sets_the_rows_and_the_count_says_n_of_m(instructor_client, name):
    spec = LISTS[name]
    spec.make(30, prefix="match")
    spec.make(4, prefix="other")
    small = spec.sizes[0]
    assert len(rows(instructor_client, spec, f"page_size={small}")) == small
    assert len(rows(instructor_client, spec, f"page_size={spec.sizes[2]}")) == 34
    html = instructor_client.get(f"{spec.url}?page_size={small}").content.decode()
    assert f"page_size={small}&amp;page=2" in html  # the next page keeps the size
    html = instructor_client.get(f"{spec.url}?q=match").content.decode()
    assert re.search(rf"<strong>30</strong> of {34} {spec.noun}", html), name


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200, url
    return len(ctx.captured_queries)


@pytest.mark.parametrize("name", LISTS)
def test_query_count_is_the_same_for_10_and_200_rows(instructor_client, name):
    spec = LISTS[name]
    urls = [spec.url, f"{spec.url}?q=row&page_size=200", f"{spec.url}?page=2&page_size={spec.sizes[0]}"]
    urls += [f"{spec.url}?sort=-{key}" for key in spec.sort_keys]
    spec.make(10, prefix="row")
    [_queries(instructor_client, u) for u in urls]  # warm up
    small = [_queries(instructor_client, u) for u in urls]
    spec.make(190, prefix="row")
    large = [_queries(instructor_client, u) for u in urls]
    assert small == large


@pytest.mark.parametrize("url", ["/sessions/", "/reports/"])
def test_the_filter_choices_cost_the_same_for_2_and_40_definitions_and_workers(instructor_client, url):
    """The definition and worker selects are one query each: the FSM mixin reads `status` on load, so the
    rows are fetched with it (a deferred `status` would cost a query per definition or worker)."""

    def add(n):
        for _ in range(n):
            DefinitionFactory()
            WorkerFactory()

    add(2)
    _queries(instructor_client, url)
    small = _queries(instructor_client, url)
    add(38)
    assert _queries(instructor_client, url) == small
