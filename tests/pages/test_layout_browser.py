"""Layouts that fit, dark mode and local time in a real browser (issue 19): every page at 1366×768 and
390×844, in the light and the dark scheme, over a realistic day (a fleet, an exam with its roster, a
session in every state, score reports). Screenshots go to `test-artifacts/layout/` (not committed)."""

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from sessions.models import Exam
from tests.pages.conftest import ROOT, make_session

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "test-artifacts" / "layout"
SIZES = {"laptop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}
# The page routes of the instructor apps that are not pages: actions (POST), downloads.
NOT_PAGES = {
    "sessions:session_action",
    "sessions:definition_action",
    "sessions:exam_action",
    "sessions:exam_results_csv",
    "workers:worker_action",
    "grading:report_export",
    "grading:session_regrade",
}
APPS = ("sessions", "workers", "scheduling", "grading")

# Every cell must lie inside its card, every table wrapper must show all of its table, the page
# must not scroll sideways, and every status badge must be readable. Hidden cells (in a closed
# <details>, a stacked table's visually hidden head) are skipped.
GEOMETRY = r"""() => {
  const problems = [];
  const page = document.scrollingElement;
  if (page.scrollWidth > window.innerWidth) {
    problems.push(`page is ${page.scrollWidth}px wide in ${window.innerWidth}px`);
  }
  for (const cell of document.querySelectorAll("td, th")) {
    const head = cell.closest("thead");
    if (head && head.getBoundingClientRect().width <= 1) continue;
    if (!cell.checkVisibility()) continue;
    const box = cell.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    const card = cell.closest(".card") || document.querySelector("main");
    const edge = card.getBoundingClientRect();
    if (box.right > edge.right + 1 || box.left < edge.left - 1) {
      const where = `[${Math.round(box.left)}, ${Math.round(box.right)}]`;
      const card_edges = `[${Math.round(edge.left)}, ${Math.round(edge.right)}]`;
      problems.push(`cell "${cell.textContent.trim().slice(0, 30)}" ${where} outside its card ${card_edges}`);
    }
  }
  for (const wrap of document.querySelectorAll(".table-wrap")) {
    if (wrap.getBoundingClientRect().width > 0 && wrap.scrollWidth > wrap.clientWidth + 1) {
      const widths = `${wrap.scrollWidth} > ${wrap.clientWidth}`;
      problems.push(`a table is clipped in its wrapper (${widths}): ${wrap.textContent.trim().slice(0, 40)}`);
    }
  }
  // Status badges: their text readable on their colour (WCAG AA, 4.5:1) in the scheme shown.
  const rgb = (c) => (c.match(/[\d.]+/g) || []).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  }).reduce((sum, v, k) => sum + v * [0.2126, 0.7152, 0.0722][k], 0);
  for (const badge of document.querySelectorAll(".badge")) {
    const style = getComputedStyle(badge);
    const [a, b] = [lum(rgb(style.color)), lum(rgb(style.backgroundColor))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) problems.push(`badge "${badge.textContent.trim()}" contrast ${ratio.toFixed(2)}`);
  }
  return problems;
}"""


@pytest.fixture
def day(db, fleet):
    """A realistic day: the fleet's session in every state, an exam with a roster of long candidate
    ids, reservation ids, and a queue of sessions waiting to be placed."""
    start = timezone.now() + timedelta(hours=1)
    exam = Exam.objects.create(
        name="Networking 101 — final practical exam, group B",
        definition=fleet["definition"],
        timeslot_start=start,
        timeslot_end=start + timedelta(hours=2),
        created_by="instructor",
    )
    for n in range(12):
        make_session(
            "PENDING" if n % 3 else "SCHEDULED",
            definition=fleet["definition"],
            worker=fleet["worker"],
            owner=f"firstname.lastname{n:02d}@university.example.edu",
            exam=exam,
            reservation_id=f"RES-2026-12-{n:04d}-ABCDEFGH",
            timeslot_start=start,
            timeslot_end=start + timedelta(hours=2),
            with_children=False,
        )
    fleet["exam"] = exam
    return fleet


def page_paths(day) -> dict[str, str]:
    """Every page route of the instructor apps (read from the URL conf), with ids from the day."""
    session = day["sessions"]["RUNNING"]
    kwargs_for = {
        "sessions:session_detail": {"pk": session.pk},
        "sessions:definition_detail": {"pk": day["definition"].pk},
        "sessions:exam_detail": {"pk": day["exam"].pk},
        "workers:worker_detail": {"pk": day["worker"].pk},
        "workers:worker_confirm": {"pk": day["worker"].pk, "action": "drain"},
        "sessions:session_confirm": {"pk": session.pk, "action": "terminate"},
    }
    paths = {}
    for name in route_names():
        if name in NOT_PAGES:
            continue
        assert name in kwargs_for or "<" not in route_pattern(name), f"give {name} its ids in page_paths()"
        from django.urls import reverse  # Imported here: after Django is set up by pytest-django

        paths[name] = reverse(name, kwargs=kwargs_for.get(name))
    paths["sessions:search"] += "?q=firstname"  # the results of a search that finds sessions, not its hint
    return paths


def route_names() -> list[str]:
    names = []
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace in APPS:
            names += [f"{entry.namespace}:{p.name}" for p in entry.url_patterns if isinstance(p, URLPattern)]
    return names


def route_pattern(name: str) -> str:
    namespace, short = name.split(":")
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == namespace:
            for p in entry.url_patterns:
                if p.name == short:
                    return str(p.pattern)
    raise KeyError(name)


def new_page(browser, live_server, user, *, viewport, **context_options):
    context = browser.new_context(viewport=viewport, base_url=live_server.url, **context_options)
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
    page = context.new_page()
    page.set_default_timeout(8000)
    errors = []
    page.on("pageerror", lambda exc: errors.append(f"JS error: {exc}"))
    page.on("response", lambda r: r.status >= 500 and errors.append(f"{r.status} from {r.url}"))
    return context, page, errors


def settle(page):
    """prefs.js has labelled and fitted the tables (it runs on DOMContentLoaded and each swap)."""
    page.wait_for_load_state("load")
    page.wait_for_function("document.querySelectorAll('table:not([data-labelled]) > thead').length === 0")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_fits_at_laptop_and_phone_size(browser, live_server, admin_user, day, scheme):
    paths = page_paths(day)
    must = {
        "sessions:dashboard",
        "sessions:session_detail",
        "scheduling:scheduler",
        "sessions:exam_detail",
        "sessions:search",
    }
    assert must <= set(paths)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for size, viewport in SIZES.items():
        context, page, errors = new_page(browser, live_server, admin_user, viewport=viewport, color_scheme=scheme)
        for name, path in paths.items():
            page.goto(path)
            settle(page)
            # Opened, as a user reading the page would: a report's sections, the booking forms.
            page.evaluate("document.querySelectorAll('main details').forEach((d) => { d.open = true; })")
            settle(page)
            problems += [f"{name} {size} {scheme}: {p}" for p in page.evaluate(GEOMETRY)]
            page.screenshot(path=str(ARTIFACTS / f"{name.replace(':', '-')}-{size}-{scheme}.png"), full_page=True)
        context.close()
        problems += errors
    assert not problems, "\n".join(problems)


def test_dark_mode_follows_the_system_and_the_toggle_persists(browser, live_server, admin_user, day):
    context, page, errors = new_page(browser, live_server, admin_user, viewport=SIZES["laptop"], color_scheme="dark")
    background = "() => getComputedStyle(document.body).backgroundColor"
    page.goto("/")
    system_dark = page.evaluate(background)
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") is None
    assert page.locator("#theme-choice").input_value() == "system"

    page.locator("#theme-choice").select_option("light")
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") == "light"
    light = page.evaluate(background)
    assert light != system_dark

    page.reload()  # remembered: theme.js sets it before the first paint
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") == "light"
    assert page.evaluate(background) == light and page.locator("#theme-choice").input_value() == "light"

    page.locator("#theme-choice").select_option("dark")
    page.goto(f"/sessions/{day['sessions']['RUNNING'].pk}/")
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") == "dark"
    assert page.evaluate(background) == system_dark

    page.locator("#theme-choice").select_option("system")
    page.reload()
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") is None
    assert page.evaluate("localStorage.getItem('lcm-theme')") is None
    context.close()
    assert not errors, errors


def test_times_show_in_the_browsers_zone_with_utc_on_hover(browser, live_server, admin_user, day):
    session = day["sessions"]["RUNNING"]
    context, page, errors = new_page(
        browser, live_server, admin_user, viewport=SIZES["laptop"], timezone_id="Europe/Berlin"
    )
    page.goto(f"/sessions/{session.pk}/")
    settle(page)
    booked = page.locator("dt:text-is('Booked') + dd time")
    created = session.created_at
    berlin = created.astimezone(ZoneInfo("Europe/Berlin"))
    assert booked.inner_text() == f"{berlin:%Y-%m-%d %H:%M:%S}"
    assert booked.get_attribute("title") == f"{created.astimezone(ZoneInfo('UTC')):%Y-%m-%d %H:%M:%S} UTC"
    assert berlin.utcoffset() != timedelta(0)  # the test means something: Berlin is never UTC
    relative = page.locator("time[data-rel]").first
    assert relative.inner_text().startswith(("ends in", "ended", "starts in", "started"))
    assert "Europe/Berlin" in page.locator("#tz-choice option[value=local]").inner_text()

    # The chooser shows UTC instead, and says so on every page after.
    page.locator("#tz-choice").select_option("UTC")
    assert booked.inner_text() == f"{created.astimezone(ZoneInfo('UTC')):%Y-%m-%d %H:%M:%S}"
    page.reload()
    settle(page)
    assert page.locator("dt:text-is('Booked') + dd time").inner_text() == f"{created:%Y-%m-%d %H:%M:%S}"
    page.locator("#tz-choice").select_option("local")
    assert page.locator("dt:text-is('Booked') + dd time").inner_text() == f"{berlin:%Y-%m-%d %H:%M:%S}"
    # Any other zone, remembered across pages.
    page.locator("#tz-choice").focus()
    page.locator("#tz-choice").select_option("Asia/Tokyo")
    page.reload()
    settle(page)
    tokyo = created.astimezone(ZoneInfo("Asia/Tokyo"))
    assert page.locator("dt:text-is('Booked') + dd time").inner_text() == f"{tokyo:%Y-%m-%d %H:%M:%S}"
    assert page.locator("#tz-choice").input_value() == "Asia/Tokyo"
    page.locator("#tz-choice").select_option("local")

    # The booking form's 24-h ISO field says what the typed UTC time is in Berlin.
    page.goto("/sessions/")
    page.locator("summary", has_text="New session").first.click()
    start = page.locator("input[name=timeslot_start]")
    assert start.get_attribute("type") == "text" and start.get_attribute("placeholder") == "YYYY-MM-DD HH:MM"
    start.fill("2026-07-01 12:00")
    assert page.locator(".tz-hint").first.inner_text() == "= 2026-07-01 14:00 Europe/Berlin"
    context.close()
    assert not errors, errors
