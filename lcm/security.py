"""Production that refuses to be unsafe (SPEC §12): the secret check the settings run with DEBUG off,
and the Content-Security-Policy header.

Imported by `lcm.settings`, so it reads no setting at import time.
"""

from urllib.parse import urlsplit

from django.conf import settings

# Shortest accepted values with DJANGO_DEBUG=0 (the launcher generates 43-character secrets).
MIN_SECRET_KEY_LENGTH = 32
MIN_SHARED_SECRET_LENGTH = 16


def weak_secrets(secrets: list[tuple[str, str, str, int]]) -> list[str]:
    """The variables of `(name, value, default, min_length)` that are empty, the default or too short.

    Surrounding whitespace does not count: `" local-webhook-secret "` is still the default.
    """
    weak = []
    for name, value, default, min_length in secrets:
        stripped = (value or "").strip()
        if not stripped or stripped == default.strip() or len(stripped) < min_length:
            weak.append(f"{name} must be set (at least {min_length} characters, not the local default)")
    return weak


def default_credentials(credentials: list[tuple[str, str, str, bool]]) -> list[str]:
    """The variables of `(name, value, default, simulated)` still empty or at the simulators' default.

    A default is fine only while the system it opens is the shipped simulator (`simulated`):
    the launcher and docker-compose run production settings against the simulators.
    """
    return [
        f"{name} must be set (the real system's credential, not the simulators' default)"
        for name, value, default, simulated in credentials
        if not simulated and (value or "").strip() in ("", default)
    ]


def is_simulator_url(url: str, simulator_hosts: set[str]) -> bool:
    """True when `url` points at a host the shipped simulators are served on."""
    return (urlsplit(url).hostname or "") in simulator_hosts


def unsafe_endpoints(
    *, cml_url_template: str, cml_verify_tls: bool, oidc_issuer: str, oidc_client_secret: str, simulator_hosts: set
) -> list[str]:
    """What production refuses about the real CML workers and the identity provider: a launched CML reached
    over plain HTTP or without TLS verification; single sign-on with no client secret or over plain HTTP."""
    problems = []
    if cml_url_template and urlsplit(cml_url_template).scheme != "https":
        problems.append("LCM_CML_URL_TEMPLATE must be an https URL (LCM sends the CML credentials there)")
    if cml_url_template and not cml_verify_tls:
        problems.append("LCM_CML_VERIFY_TLS must stay on for a real CML (set LCM_CML_CA_BUNDLE for its certificates)")
    if oidc_issuer:
        if not oidc_client_secret.strip():
            problems.append("LCM_OIDC_CLIENT_SECRET must be set (single sign-on is on: LCM_OIDC_ISSUER)")
        if urlsplit(oidc_issuer).scheme != "https" and not is_simulator_url(oidc_issuer, simulator_hosts):
            problems.append("LCM_OIDC_ISSUER must be an https URL")
    return problems


def refusal(problems: list[str]) -> str:
    """The one line production settings refuse to start with."""
    return "DJANGO_DEBUG=0 refuses to start: " + "; ".join(problems)


class ContentSecurityPolicyMiddleware:
    """Sets `Content-Security-Policy` on every response that has none (settings.CONTENT_SECURITY_POLICY)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY_BY_PATH.get(request.path, settings.CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Content-Security-Policy", policy)
        return response
