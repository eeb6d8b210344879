"""Accessibility in a real browser (issue 19): axe-core, vendored in `tests/vendor/axe-core/`, finds no
serious or critical violation on any page — every page route of the instructor apps (the layout test's
list), a session in several states, the Django admin (index, a change list, a change form), the login
page and the 404 page — in the light and the dark scheme at 1366×768, and at 390×844 in both schemes.

axe runs with all of its rules; nothing is disabled and no element is excluded. The script is given to
the page through Playwright's `evaluate` (the DevTools protocol), so the page keeps its own CSP
(`script-src 'self'`) while it is checked."""

import pytest
from django.template.loader import render_to_string

from lcm.templatetags.badges import BADGE_COLOURS_BY_KIND
from tests.pages import test_layout_browser as layout
from tests.pages.conftest import ROOT
from tests.pages.test_layout_browser import SIZES, new_page, page_paths, settle

day = layout.day  # the layout test's realistic day (a fixture), shared rather than copied

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = (ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js").read_text()
FAILING = ("serious", "critical")
# Sessions shown besides the layout test's RUNNING one: each state shows other parts (actions, grading,
# the review hold, the report, the end).
SESSION_STATES = ("PENDING", "READY", "GRADING", "STOPPED", "ARCHIVED", "TERMINATED")

# Forms sent empty, to check the pages that show their errors: (page, button that sends the form).
FORMS_SENT_EMPTY = (
    ("/definitions/new/", "Create definition"),
    ("/exams/new/", "Book exam"),
    ("/sessions/", "Book session"),
)

RUN_AXE = """async (within) => {
  const result = await axe.run(within ? document.querySelector(within) : document, {resultTypes: ["violations"]});
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.map((n) => ({target: n.target.join(" "), impact: n.impact, summary: n.failureSummary})),
  }));
}"""


def all_paths(day) -> dict[str, str]:
    """The layout test's pages, a session in more states and the admin pages an operator uses."""
    paths = page_paths(day)
    for status in SESSION_STATES:
        paths[f"session {status}"] = f"/sessions/{day['sessions'][status].pk}/"
    running = day["sessions"]["RUNNING"]
    paths["admin index"] = "/admin/"
    paths["admin session list"] = "/admin/lablets/labletsession/"
    paths["admin session change"] = f"/admin/lablets/labletsession/{running.pk}/change/"
    paths["admin worker list"] = "/admin/workers/cmlworker/"
    paths["admin worker add"] = "/admin/workers/cmlworker/add/"
    paths["admin definition change"] = f"/admin/lablets/labletdefinition/{day['definition'].pk}/change/"
    paths["404"] = "/no-such-page/"
    return paths


def every_badge() -> str:
    """A status badge (the real include) for every status of every choice set the apps registered."""
    return "".join(
        render_to_string("includes/status_badge.html", {"status": status, "kind": kind})
        for kind, colours in BADGE_COLOURS_BY_KIND.items()
        for status in colours
    )


def axe_violations(page, within=None) -> list[str]:
    """Every serious or critical violation axe reports on the page shown (or in its element `within`, a CSS
    selector), one line per element."""
    page.evaluate(AXE)
    found = []
    for violation in page.evaluate(RUN_AXE, within):
        for node in violation["targets"]:
            impact = node["impact"] or violation["impact"]
            if impact in FAILING:
                summary = " ".join(node["summary"].split())[:300]
                found.append(f"{violation['id']} [{impact}] {node['target']}: {violation['help']} — {summary}")
    return found


def check(page, path, status=200) -> list[str]:
    """axe's findings on the page at `path`, which must answer `status` (not an error page checked instead)."""
    response = page.goto(path)
    assert response.status == status, f"{path} answered {response.status}"
    ours = page.evaluate("document.querySelector('script[src*=\"prefs\"]') !== null")  # not the admin's pages
    if ours:
        settle(page)
        # Opened, as a user reading the page would: a report's sections, the booking forms.
        page.evaluate("document.querySelectorAll('main details').forEach((d) => { d.open = true; })")
        settle(page)
    else:
        page.wait_for_load_state("load")
    return axe_violations(page)


def badges_checked(page) -> list[str]:
    """Every badge colour of the states tables, not only those of the day's statuses, on a card of the
    dashboard."""
    page.goto("/")
    settle(page)
    badges = every_badge()
    assert badges.count('class="badge bg-') > 40
    page.evaluate(
        "(html) => { const p = document.createElement('p'); p.id = 'badge-probe'; p.className = 'card';"
        " p.innerHTML = html; document.querySelector('main').append(p); }",
        badges,
    )
    return [f"badge: {v}" for v in axe_violations(page, "#badge-probe")]


def forms_with_errors_checked(page) -> list[str]:
    problems = []
    for path, send in FORMS_SENT_EMPTY:
        page.goto(path)
        settle(page)
        page.evaluate("document.querySelectorAll('main details').forEach((d) => { d.open = true; })")
        page.get_by_role("button", name=send).click()
        page.locator(".field-error").first.wait_for()
        settle(page)
        problems += [f"{path} with errors: {v}" for v in axe_violations(page)]
    return problems


def confirmed_actions_checked(page, day) -> list[str]:
    """A confirmation page confirmed: the exam's bulk outcome page, the worker page with its message."""
    problems = []
    exam, worker = day["exam"].pk, day["worker"].pk
    for path, send in (
        (f"/exams/{exam}/actions/terminate/", "Terminate"),
        (f"/workers/{worker}/confirm/drain/", "Drain"),
    ):
        problems += [f"{path}: {v}" for v in check(page, path)]
        page.locator("main form.form-actions button[type=submit]").filter(has_text=send).click()
        page.wait_for_load_state("load")
        settle(page)
        problems += [f"{path} confirmed ({page.url}): {v}" for v in axe_violations(page)]
    return problems


def signed_out_checked(browser, live_server, viewport, scheme, errors) -> list[str]:
    context = browser.new_context(viewport=viewport, base_url=live_server.url, color_scheme=scheme)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"JS error: {exc}"))
    problems = [f"login: {v}" for v in check(page, "/accounts/login/")]
    page.fill("#id_username", "nobody")
    page.fill("#id_password", "wrong")
    page.get_by_role("button", name="Log in").click()
    page.locator(".form-errors").wait_for()
    problems += [f"login refused: {v}" for v in axe_violations(page)]
    context.close()
    return problems


@pytest.mark.parametrize(
    ("scheme", "size"), [("light", "laptop"), ("dark", "laptop"), ("light", "phone"), ("dark", "phone")]
)
def test_axe_finds_no_serious_violation_on_any_page(browser, live_server, admin_user, day, scheme, size):
    paths = all_paths(day)
    assert {"sessions:dashboard", "sessions:exam_detail", "workers:worker_detail", "admin session change"} <= set(paths)
    context, page, errors = new_page(browser, live_server, admin_user, viewport=SIZES[size], color_scheme=scheme)
    problems = []
    for name, path in paths.items():
        status = 404 if name == "404" else 200
        problems += [f"{name} ({path}): {v}" for v in check(page, path, status)]
    problems += badges_checked(page)
    problems += forms_with_errors_checked(page)
    problems += confirmed_actions_checked(page, day)  # last: it changes the day's exam and worker
    context.close()
    problems += signed_out_checked(browser, live_server, SIZES[size], scheme, errors)
    assert not problems, f"{len(problems)} serious/critical axe violations ({scheme}, {size}):\n" + "\n".join(problems)
    assert not errors, errors
