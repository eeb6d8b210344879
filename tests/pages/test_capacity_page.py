"""The /capacity/ page (SPEC §10): a server-rendered SVG of booked demand against capacity for the next 7 days,
the exams marked, the planned launches and drains, today's and the week's projected cost; live like the others."""

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions.models import Exam, LabletSession
from tests.factories import DefinitionFactory, TemplateFactory, WorkerFactory
from workers.models import SystemSettings


def _exam_three_days_ahead():
    template = TemplateFactory(name="cap-medium", cpu_cores=16, memory_gb=64, storage_gb=400, max_nodes=60,
                               startup_minutes=10, cost_per_hour=0.768)  # fmt: skip
    system = SystemSettings.load()
    system.default_worker_template = template
    system.autoscaling_enabled = True
    system.max_workers_per_region = 50
    system.save()
    WorkerFactory(template=template)
    definition = DefinitionFactory(name="ccnp-exam", cpu_cores=4, memory_gb=8)
    start = (timezone.now() + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    exam = Exam.objects.create(name="CCNP spring", definition=definition, timeslot_start=start,
                               timeslot_end=start + timedelta(hours=1))  # fmt: skip
    LabletSession.objects.bulk_create(
        LabletSession(
            definition=definition,
            definition_version="1.0.0",
            owner=f"cand-{i}",
            exam=exam,
            timeslot_start=start,
            timeslot_end=start + timedelta(hours=1),
        )  # fmt: skip
        for i in range(40)
    )
    return exam


@pytest.mark.django_db
def test_the_page_draws_demand_capacity_the_exam_and_the_plan(instructor_client):
    _exam_three_days_ahead()
    response = instructor_client.get("/capacity/")
    assert response.status_code == 200
    html = response.content.decode()
    for marker in ('id="capacity-chart"', 'id="series-demand"', 'id="series-capacity"', 'class="exam-marker"',
                   'class="planned-launch"', 'class="planned-drain"', 'id="cost-today"', 'id="cost-week"',
                   "CCNP spring", 'hx-get="/capacity/'):  # fmt: skip
        assert marker in html, marker
    assert 'href="/capacity/"' in html  # the nav link


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_chart_in_a_browser(open_page, instructor):
    from playwright.sync_api import expect

    _exam_three_days_ahead()
    page = open_page(instructor, "/")
    page.get_by_role("link", name="Capacity").click()
    expect(page.get_by_role("heading", name="Capacity", exact=True)).to_be_visible()
    chart = page.locator("svg#capacity-chart")
    expect(chart).to_be_visible()
    # One series each for demand and capacity, by element.
    expect(chart.locator("polyline.series-demand")).to_have_count(1)
    expect(chart.locator("polyline.series-capacity")).to_have_count(1)
    demand_points = chart.locator("polyline.series-demand").get_attribute("points").split()
    assert len(demand_points) == 7 * 24
    assert len({p.split(",")[1] for p in demand_points}) > 1  # the exam's bump
    expect(chart.locator("g.exam-marker")).to_have_count(1)
    expect(chart.locator("g.exam-marker title")).to_contain_text("CCNP spring")
    assert chart.locator("circle.planned-launch").count() >= 1 and chart.locator("circle.planned-drain").count() >= 1
    expect(page.locator("#cost-week")).to_contain_text("$")
    expect(page.locator("tr.planned-row-launch").first).to_contain_text("cap-medium")
