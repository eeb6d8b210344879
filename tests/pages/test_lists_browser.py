"""Lists and the global search in a real browser (issue 19): the top bar's search, typed into on any page,
lands on the grouped results and a result opens its page; on a phone the box is there and the page does not
scroll sideways; a table stacked on a phone (its header row hidden) offers its sort links in a sort bar."""

import re

import pytest

from tests.factories import DefinitionFactory, SessionFactory, WorkerFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_typing_in_the_top_bar_search_lands_on_a_result(open_page, instructor):
    from playwright.sync_api import expect  # Imported here: Playwright is needed by the browser tests only

    session = SessionFactory(definition=DefinitionFactory(name="ccna"), owner="zoe.candidate@example.com")
    WorkerFactory(name="worker-zoe-1")
    page = open_page(instructor, "/workers/")
    box = page.get_by_role("searchbox", name="Search sessions, workers, definitions and exams")
    box.fill("zoe")
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"/search/\?q=zoe$"))
    expect(page.locator("#results-sessions h2")).to_contain_text("1")
    expect(page.locator("#results-workers")).to_contain_text("worker-zoe-1")
    expect(box).to_have_value("zoe")  # the top bar keeps what was searched
    page.locator("#results-sessions").get_by_role("link", name="zoe.candidate@example.com").click()
    expect(page).to_have_url(re.compile(rf"/sessions/{session.pk}/$"))
    expect(page.locator("h1")).to_contain_text("zoe.candidate@example.com")


def test_the_top_bar_search_fits_a_phone(open_page, instructor):
    from playwright.sync_api import expect  # Imported here: Playwright is needed by the browser tests only

    page = open_page(instructor, "/sessions/", viewport={"width": 390, "height": 844})
    box = page.locator("#top-q")
    expect(box).to_be_visible()
    width = box.bounding_box()["width"]
    assert width > 150  # a usable box, on its own row
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    box.fill("nobody")
    page.locator(".topsearch-go").click()
    expect(page).to_have_url(re.compile(r"/search/\?q=nobody$"))
    expect(page.locator("#search-summary")).to_contain_text("0 results")


def test_a_stacked_table_shows_a_sort_bar_instead_of_its_hidden_headers(open_page, instructor):
    from playwright.sync_api import expect  # Imported here: Playwright is needed by the browser tests only

    for i in range(3):
        DefinitionFactory(name=f"lab-{i}", version=f"1.{i}.0")
    page = open_page(instructor, "/definitions/")
    page.wait_for_function("document.querySelector('table.definitions[data-labelled]') !== null")
    expect(page.locator("table.definitions")).not_to_have_class(re.compile("table-stacked"))  # fits a laptop
    expect(page.locator("nav.sort-bar")).to_be_hidden()
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Name")

    phone = open_page(instructor, "/definitions/?sort=-version", viewport={"width": 390, "height": 844})
    phone.wait_for_function("document.querySelector('table.definitions[data-labelled]') !== null")  # stacked
    bar = phone.get_by_role("navigation", name="Sort definitions")
    expect(bar).to_be_visible()
    expect(bar.locator("a[aria-current=true]")).to_contain_text("Version")
    bar.get_by_role("link", name=re.compile("^Version")).click()  # the current key again: the other way
    expect(phone).to_have_url(re.compile(r"/definitions/\?sort=version$"))
    names = phone.locator("table.definitions a.rowlink").all_inner_texts()
    assert names == ["lab-0", "lab-1", "lab-2"]
