"""The browser for the page tests: Debian's Chromium driven by Playwright (sync API); no browser download.

`browser` (one per test session) and `open_page` (a logged-in context per call) are fixtures, registered
for every test by `tests/conftest.py`; `button` and `status_of` find a session page's parts.
"""

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests make there (in the
# browser tests and in every test after them in the same run) are still synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAPTOP = {"width": 1366, "height": 900}


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the browser tests need it")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def open_page(browser, live_server):
    """`open_page(user, path)`: a fresh browser context logged in as `user`. Fails the test on any
    JavaScript error or any 5xx response seen by the page."""
    contexts, problems = [], []

    def _open(user=None, path="/", viewport=LAPTOP):
        context = browser.new_context(viewport=viewport, base_url=live_server.url, accept_downloads=True)
        contexts.append(context)
        if user is not None:
            client = Client()
            client.force_login(user)
            cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
            context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
        page = context.new_page()
        page.set_default_timeout(5000)
        page.on("pageerror", lambda exc: problems.append(f"JS error: {exc}"))
        page.on("response", lambda r: r.status >= 500 and problems.append(f"{r.status} from {r.url}"))
        page.goto(path)
        return page

    yield _open
    for context in contexts:
        context.close()
    assert not problems, problems


def status_of(page):
    return page.locator("[data-status]")


def button(page, label):
    return page.locator("#session-actions").get_by_role("button", name=label, exact=True)
