"""Single sign-on through the OIDC simulator (SPEC §12): code flow with PKCE and a nonce, roles from the groups
claim, no group no access, and every token or answer that fails a check refused with a page saying why.

The person's browser is played by `requests` at the provider (its `login_hint` signs in at once) and by
Django's test client at LCM; the browser walk itself is tests/pages/test_sso_browser.py."""

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from lcm.models import OidcIdentity
from lcm.roles import is_admin, is_instructor
from tests.lcm.test_production_safety import manage
from tests.support.oidc import CLIENT_ID, CLIENT_SECRET

pytestmark = pytest.mark.django_db

ADMIN_PAGE = "scheduling:settings"


@pytest.fixture
def browser_client():
    # A loopback host name, as a person's browser would use: the simulator accepts loopback redirect URIs.
    return Client(SERVER_NAME="localhost")


def start(client, next_url: str | None = None) -> str:
    """LCM's "Sign in with SSO": the provider's authorization URL it redirects to."""
    response = client.get("/oidc/authenticate/", {"next": next_url} if next_url else {})
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def sign_in(client, username: str, next_url: str | None = None):
    """The whole round trip; LCM's answer to the provider's redirect back."""
    at_provider = requests.get(
        start(client, next_url), params={"login_hint": username}, allow_redirects=False, timeout=5
    )
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


def test_the_login_page_offers_sso_only_when_it_is_configured(browser_client, settings):
    settings.LCM_OIDC_ISSUER = ""
    assert "Sign in with SSO" not in browser_client.get("/accounts/login/").content.decode()
    assert browser_client.get("/oidc/authenticate/").status_code == 404
    assert browser_client.get("/oidc/callback/?code=x&state=y").status_code == 404


def test_the_button_and_the_authorization_request_carry_pkce_and_a_nonce(browser_client, oidc_provider):
    page = browser_client.get("/accounts/login/").content.decode()
    assert "Sign in with SSO" in page and 'href="/oidc/authenticate/' in page
    location = urlsplit(start(browser_client))
    query = parse_qs(location.query)
    assert (
        f"{location.scheme}://{location.netloc}{location.path}"
        == f"{oidc_provider.issuer}/protocol/openid-connect/auth"
    )
    assert query["client_id"] == [CLIENT_ID] and query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["nonce"][0] and query["state"][0] and "openid" in query["scope"][0].split()
    assert query["redirect_uri"] == ["http://localhost/oidc/callback/"]


def test_an_instructor_group_member_gets_instructor_pages_only(browser_client, oidc_provider):
    response = sign_in(browser_client, "ian", next_url="/sessions/")
    assert response.status_code == 302 and response["Location"] == "/sessions/"
    user = get_user_model().objects.get(username="ian")
    assert is_instructor(user) and not is_admin(user) and not user.is_staff and not user.has_usable_password()
    assert OidcIdentity.objects.get(user=user).issuer == oidc_provider.issuer
    assert browser_client.get("/").status_code == 200
    assert browser_client.get("/sessions/").status_code == 200
    assert browser_client.get(reverse(ADMIN_PAGE)).status_code == 403
    assert browser_client.get("/admin/").status_code == 302  # to the admin's login: not staff


def test_an_admin_group_member_reaches_the_admin_pages(browser_client, oidc_provider):
    assert sign_in(browser_client, "ada").status_code == 302
    user = get_user_model().objects.get(username="ada")
    assert is_admin(user) and user.is_staff and user.is_superuser
    assert browser_client.get(reverse(ADMIN_PAGE)).status_code == 200
    assert browser_client.get("/admin/").status_code == 200
    assert browser_client.get("/admin/workers/cmlworker/").status_code == 200


def test_a_user_in_neither_group_is_refused_with_a_page_saying_why(browser_client, oidc_provider):
    response = sign_in(browser_client, "nobody")
    assert response.status_code == 403
    text = response.content.decode()
    assert "Single sign-on refused" in text and "neither LCM group" in text
    assert not get_user_model().objects.filter(username="nobody").exists()
    assert browser_client.get("/").status_code == 302  # still signed out


@pytest.mark.parametrize(
    ("tamper", "said"),
    [
        ("signature", "Signature verification failed"),
        ("groups", "Signature verification failed"),
        ("unknown_key", "Signature verification failed"),
        ("audience", "Audience doesn"),
        ("issuer", "Invalid issuer"),
        ("expired", "Signature has expired"),
        ("nonce", "could not be verified"),
    ],
)
def test_a_tampered_or_misdirected_id_token_is_refused(browser_client, oidc_provider, tamper, said):
    oidc_provider.tamper(tamper)
    response = sign_in(browser_client, "ada")
    assert response.status_code == 403
    assert said in response.content.decode()
    assert not get_user_model().objects.filter(username__startswith="ada").exists()
    assert browser_client.get("/").status_code == 302


def test_the_role_follows_the_groups_at_every_sign_in(browser_client, oidc_provider):
    assert sign_in(browser_client, "ian").status_code == 302
    oidc_provider.control("PUT", "users/ian", json={"groups": ["lcm-platform-admins"]})
    assert sign_in(Client(SERVER_NAME="localhost"), "ian").status_code == 302
    assert is_admin(get_user_model().objects.get(username="ian"))
    oidc_provider.control("PUT", "users/ian", json={"groups": []})
    assert sign_in(Client(SERVER_NAME="localhost"), "ian").status_code == 403
    oidc_provider.control("PUT", "users/ian", json={"groups": ["lcm-instructors"]})
    assert sign_in(Client(SERVER_NAME="localhost"), "ian").status_code == 302
    user = get_user_model().objects.get(username="ian")
    assert is_instructor(user) and not is_admin(user) and not user.is_superuser
    assert get_user_model().objects.filter(username__startswith="ian").count() == 1


def test_a_local_account_is_never_taken_over_by_name_or_email(browser_client, oidc_provider):
    local = get_user_model().objects.create_user("ada", "ada@example.com", "a-long-local-password-1")
    assert sign_in(browser_client, "ada").status_code == 302
    local.refresh_from_db()
    assert not local.is_staff and local.check_password("a-long-local-password-1")
    assert not OidcIdentity.objects.filter(user=local).exists()
    assert OidcIdentity.objects.get().user.username == "ada-sso"


def test_a_callback_replayed_or_not_started_here_is_refused(browser_client, oidc_provider):
    at_provider = requests.get(start(browser_client), params={"login_hint": "ian"}, allow_redirects=False, timeout=5)
    back = urlsplit(at_provider.headers["Location"])
    assert browser_client.get(f"{back.path}?{back.query}").status_code == 302
    replay = Client(SERVER_NAME="localhost").get(f"{back.path}?{back.query}")
    assert replay.status_code == 403 and "Single sign-on refused" in replay.content.decode()
    other = Client(SERVER_NAME="localhost")
    start(other)  # a sign-in of its own, with its own state
    stolen = other.get(f"{back.path}?{back.query}")
    assert stolen.status_code == 400 and "not started here" in stolen.content.decode()


def test_a_provider_that_does_not_answer_is_a_page_not_a_500(browser_client, settings):
    settings.LCM_OIDC_ISSUER = "http://127.0.0.1:9/realms/lcm"
    from lcm.oidc import forget_provider  # Imported here: the cache is the module's, cleared for this issuer

    forget_provider()
    response = browser_client.get("/oidc/authenticate/")
    assert response.status_code == 503 and "does not answer" in response.content.decode()


def test_the_provider_refusing_the_sign_in_is_shown(browser_client, oidc_provider):
    location = start(browser_client)
    query = parse_qs(urlsplit(location).query)
    response = browser_client.get(
        "/oidc/callback/", {"error": "access_denied", "error_description": "<b>no</b>", "state": query["state"][0]}
    )
    assert response.status_code == 403
    text = response.content.decode()
    assert "The identity provider refused the sign-in: &lt;b&gt;no&lt;/b&gt;" in text and "<b>no</b>" not in text


def test_the_simulator_checks_pkce_and_client_secret(oidc_provider):
    """LCM sends the verifier; the provider refuses a code without it, with a wrong one, or a wrong secret."""
    token_url = f"{oidc_provider.issuer}/protocol/openid-connect/token"
    auth_url = f"{oidc_provider.issuer}/protocol/openid-connect/auth"
    redirect_uri = "http://localhost/cb"

    def code(challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"):
        params = {
            "client_id": CLIENT_ID,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": "openid",
            "state": "s",
            "login_hint": "ian",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        answer = requests.get(auth_url, params=params, allow_redirects=False, timeout=5)
        return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]

    def exchange(the_code, verifier, secret=CLIENT_SECRET):
        form = {"grant_type": "authorization_code", "code": the_code, "redirect_uri": redirect_uri}
        form |= {"client_id": CLIENT_ID, "client_secret": secret, "code_verifier": verifier}
        return requests.post(token_url, data=form, timeout=5)

    good_verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
    assert exchange(code(), "wrong-verifier-" + "x" * 30).json()["error"] == "invalid_grant"
    assert exchange(code(), "").json()["error"] == "invalid_grant"
    assert exchange(code(), good_verifier, secret="guess").status_code == 401
    the_code = code()
    assert exchange(the_code, good_verifier).status_code == 200
    assert exchange(the_code, good_verifier).json()["error"] == "invalid_grant"  # a code is good once
    no_pkce = requests.get(
        auth_url,
        params={"client_id": CLIENT_ID, "redirect_uri": redirect_uri, "response_type": "code", "scope": "openid"},
        allow_redirects=False,
        timeout=5,
    )
    assert "error=invalid_request" in no_pkce.headers["Location"]


def test_an_sso_identity_is_listed_read_only_in_the_admin(browser_client, oidc_provider, admin_client):
    assert sign_in(browser_client, "ian").status_code == 302
    listing = admin_client.get("/admin/lcm/oidcidentity/")
    assert listing.status_code == 200 and "ian" in listing.content.decode()
    identity = OidcIdentity.objects.get()
    assert admin_client.get(f"/admin/lcm/oidcidentity/{identity.pk}/change/").status_code == 200


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LCM_OIDC_ISSUER": "https://sso.example.com/realms/lcm"}, "LCM_OIDC_CLIENT_SECRET"),
        (
            {"LCM_OIDC_ISSUER": "http://sso.example.com/realms/lcm", "LCM_OIDC_CLIENT_SECRET": "a-real-secret"},
            "LCM_OIDC_ISSUER must be an https URL",
        ),
    ],
)
def test_production_refuses_sso_without_a_secret_or_over_plain_http(tmp_path, env, named):
    result = manage("check", tmp_path=tmp_path, **env)
    assert result.returncode != 0 and named in result.stderr
