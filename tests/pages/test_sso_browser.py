"""Single sign-on walked in Chromium (SPEC §12, issue 18): the login page's "Sign in with SSO", the OIDC
simulator's login form, and back in LCM with the role the provider's groups give; refusals are a page that
says why. The provider is tests/support/oidc.py's simulator; LCM is the live server."""

import pytest
from django.urls import reverse

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sso_sign_in(open_page, username: str, password: str | None = None):
    """From LCM's login page through the provider's form; the page where the browser lands."""
    page = open_page(None, "/accounts/login/")
    page.get_by_role("link", name="Sign in with SSO").click()
    page.locator("#username").fill(username)
    page.locator("#password").fill(password or username)
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_load_state()
    return page


def test_an_instructor_signs_in_with_sso_and_sees_instructor_pages_only(open_page, oidc_provider, live_server):
    page = sso_sign_in(open_page, "ian")
    assert page.url == f"{live_server.url}/"
    assert page.locator(".who").inner_text().startswith("ian")
    nav = page.locator(".mainnav")
    assert nav.get_by_role("link", name="Sessions", exact=True).is_visible()
    assert nav.get_by_role("link", name="Settings").count() == 0
    assert nav.get_by_role("link", name="Admin").count() == 0
    denied = page.goto(f"{live_server.url}{reverse('scheduling:settings')}")
    assert denied.status == 403
    page.goto(f"{live_server.url}/admin/")
    assert "/admin/login/" in page.url  # the Django admin is not theirs


def test_an_admin_group_member_reaches_the_admin_pages(open_page, oidc_provider, live_server):
    page = sso_sign_in(open_page, "ada")
    assert page.locator(".who .role").inner_text().lower() == "admin"
    assert page.goto(f"{live_server.url}{reverse('scheduling:settings')}").status == 200
    assert page.goto(f"{live_server.url}/admin/").status == 200
    assert "Site administration" in page.content() or "Raw data and admin actions" in page.content()


def test_a_user_in_neither_group_is_refused_with_a_clear_page(open_page, oidc_provider, live_server):
    page = sso_sign_in(open_page, "nobody")
    assert page.locator("h1").inner_text() == "Single sign-on refused"
    assert "neither LCM group" in page.locator("[role=alert]").inner_text()
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url


@pytest.mark.parametrize("tamper", ["signature", "audience"], ids=["tampered ID token", "wrong audience"])
def test_a_tampered_id_token_or_a_wrong_audience_is_refused(open_page, oidc_provider, live_server, tamper):
    oidc_provider.tamper(tamper)
    page = sso_sign_in(open_page, "ada")
    assert page.locator("h1").inner_text() == "Single sign-on refused"
    assert "ID token was refused" in page.locator("[role=alert]").inner_text()
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url


def test_a_wrong_password_at_the_provider_stays_there(open_page, oidc_provider):
    page = sso_sign_in(open_page, "ian", password="not-it")
    assert "Invalid username or password." in page.content()
