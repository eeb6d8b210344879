"""The dashboard's charts and the reports page's class statistics (SPEC §11): server-rendered SVG, no CDN.

The data: sessions a candidate started and finished today at known hours, sessions graded PASS and FAIL,
READY moves with known creation → READY times, and fleet samples over the day. The page tests read the
figures and the bars' values; the browser tests walk the pages in Chromium and check the elements.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from grading.models import ScoreSection
from sessions.charts import dashboard_charts
from sessions.models import LabletSession, SessionStatusChange
from tests.factories import ScoreReportFactory
from tests.pages.conftest import SCREENSHOTS, make_session
from workers.models import FleetSample


@pytest.fixture
def today(db):
    """Three sessions started today, two finished (one PASS, one FAIL), READY after 30 s and 90 s, and fleet samples."""
    now = timezone.now()
    started = [now - timedelta(hours=h) for h in (5, 5, 2)]
    sessions = []
    for index, at in enumerate(started):
        session = make_session("RUNNING", owner=f"today-{index}", with_children=False, started_at=at)
        sessions.append(session)
    LabletSession.objects.filter(pk=sessions[0].pk).update(ended_at=now - timedelta(hours=4), grade_result="PASS")
    LabletSession.objects.filter(pk=sessions[1].pk).update(ended_at=now - timedelta(hours=1), grade_result="FAIL")
    for session, seconds in ((sessions[0], 30), (sessions[1], 90)):
        LabletSession.objects.filter(pk=session.pk).update(created_at=now - timedelta(hours=6))
        SessionStatusChange.objects.filter(session=session).update(at=now - timedelta(hours=6))
        row = SessionStatusChange.objects.create(session=session, from_status="INSTANTIATING", to_status="READY",
                                                 actor="test")  # fmt: skip
        SessionStatusChange.objects.filter(pk=row.pk).update(at=now - timedelta(hours=6) + timedelta(seconds=seconds))
    FleetSample.objects.bulk_create(
        FleetSample(at=now - timedelta(hours=h), workers=2, cpu_used=4 * (h % 3), cpu_total=16) for h in range(1, 20)
    )
    return sessions


def test_the_dashboard_charts_count_the_days_sessions(today):
    charts = dashboard_charts(current_utilisation=0.25)
    hourly = charts["hourly"]
    assert hourly["totals"] == {"started": 3, "finished": 2}
    assert len([b for b in hourly["bars"] if b.series == "started"]) == 24
    assert sorted(b.value for b in hourly["bars"] if b.series == "started" and b.value) == [1, 2]
    assert charts["ready_median"] == pytest.approx(60.0)
    assert charts["pass_rate"] == {"graded": 2, "passed": 1, "rate": 0.5}
    day = charts["utilisation"]["day"]
    assert day["points"][-1]["value"] == 0.25 and len(day["points"]) == 20  # 19 samples and now
    assert charts["utilisation"]["week"]["points"]


def test_the_dashboard_page_draws_the_charts(instructor_client, today):
    html = instructor_client.get("/").content.decode()
    assert 'data-chart="sessions-per-hour" data-total-started="3" data-total-finished="2"' in html
    assert 'data-chart="utilisation-day"' in html and 'data-chart="utilisation-week"' in html
    assert "<svg" in html and "lcm/charts.css" in html
    # The live fragment, polled every second, does not read the charts.
    fragment = instructor_client.get("/", HTTP_HX_REQUEST="true").content.decode()
    assert "sessions-per-hour" not in fragment


def _graded(score, sections):
    report = ScoreReportFactory(score=score, max_score=100, passed=score >= 70)
    ScoreSection.objects.bulk_create(
        ScoreSection(report=report, position=i, name=name, score=s, max_score=50, passed=s >= 35)
        for i, (name, s) in enumerate(sections)
    )
    return report


def test_the_reports_page_shows_class_statistics(instructor_client, db):
    _graded(90, [("Routing", 45), ("Security", 45)])
    _graded(60, [("Routing", 40), ("Security", 20)])
    _graded(30, [("Routing", 10), ("Security", 20)])
    html = instructor_client.get("/reports/").content.decode()
    assert 'data-reports="3"' in html
    assert "60.0%" in html  # the mean of 90, 60 and 30
    assert 'data-chart="score-histogram" data-total-count="3"' in html
    # Hardest section first: Security (mean 56.7 %) before Routing (63.3 %).
    assert html.index('data-section="Security"') < html.index('data-section="Routing"')
    failing = instructor_client.get("/reports/", {"passed": "false"}).content.decode()
    assert 'data-reports="2"' in failing  # the statistics follow the filters


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_dashboard_charts_show_the_days_sessions_in_the_browser(open_page, instructor, today):
    from playwright.sync_api import expect  # Imported here: Playwright loads only for the browser tests.

    page = open_page(instructor, "/")
    chart = page.locator('figure[data-chart="sessions-per-hour"]')
    expect(chart).to_be_visible()
    expect(chart).to_have_attribute("data-total-started", "3")
    expect(chart).to_have_attribute("data-total-finished", "2")
    started = chart.locator('rect[data-series="started"]')
    expect(started).to_have_count(24)
    values = [float(v) for v in started.evaluate_all("bars => bars.map(b => b.dataset.value)")]
    assert sum(values) == 3
    tallest = started.evaluate_all("bars => Math.max(...bars.map(b => b.getBBox().height))")
    assert tallest > 0  # drawn, not only counted
    expect(page.locator('[data-figure="pass-rate"] dd:not(.figure-note)')).to_have_text("50%")
    expect(page.locator('[data-figure="ready-median"] dd')).to_have_text("60.0 s")
    expect(page.locator('figure[data-chart="utilisation-day"] polyline')).to_have_count(1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#dashboard-charts").screenshot(path=str(SCREENSHOTS / "40-dashboard-charts.png"))

    page.goto("/reports/")
    expect(page.locator("#class-statistics")).to_have_count(0)  # no report yet: no statistics card
    _graded(90, [("Routing", 45), ("Security", 45)])
    _graded(40, [("Routing", 30), ("Security", 10)])
    page.reload()
    stats = page.locator("#class-statistics")
    expect(stats).to_be_visible()
    expect(stats.locator('[data-figure="mean"] dd')).to_have_text("65.0%")
    expect(stats.locator('[data-figure="pass-rate"] dd:not(.figure-note)')).to_have_text("50%")
    expect(stats.locator('figure[data-chart="score-histogram"] rect')).to_have_count(10)
    expect(stats.locator("tr[data-section]").first).to_have_attribute("data-section", "Security")  # hardest first
    stats.screenshot(path=str(SCREENSHOTS / "41-class-statistics.png"))


def test_the_fleet_samples_loop_samples_once_per_interval_and_forgets_old_samples(db, settings):
    from scheduling.fleet_samples import sample_fleet  # Imported here: the loop's tick is what is under test.
    from tests.factories import WorkerFactory

    settings.LCM_FLEET_SAMPLE_DAYS = 8
    worker = WorkerFactory(cpu_cores=8)
    make_session("RUNNING", worker=worker, with_children=False)
    old = FleetSample.objects.create(at=timezone.now() - timedelta(days=9), workers=1, cpu_total=8)
    assert sample_fleet() == []
    sample_fleet()  # a second tick within the interval samples nothing
    samples = list(FleetSample.objects.all())
    assert len(samples) == 1 and samples[0].pk != old.pk
    assert (samples[0].workers, samples[0].cpu_total) == (1, 8) and samples[0].cpu_used > 0
