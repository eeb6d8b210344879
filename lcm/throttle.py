"""Login throttling (SPEC §12) with django-axes: what a lockout is keyed on, the client address, and the API
tokens' share of it.

The login page and the admin are covered by `axes.backends.AxesStandaloneBackend` (first in
AUTHENTICATION_BACKENDS) and `axes.middleware.AxesMiddleware`; the REST API's token authentication asks
`api_lockout()` before it looks at a key and reports a refused key with `api_failure()`. Failures count per
username and per client address; `LCM_LOGIN_FAILURE_LIMIT` of them lock that username (any address) and that
address (any username, or a token) for `LCM_LOGIN_LOCKOUT_MINUTES`, after which the lock ends by itself.
"""

from django.conf import settings
from django.contrib.auth.signals import user_login_failed

# Attempts without a username (an API token, the single sign-on callback) count for the address only.
NO_USERNAME = {"username": None}


def lockout_parameters(request, credentials) -> list:
    """AXES_LOCKOUT_PARAMETERS: the address always, and the username when there is one (a lock on "no
    username" would lock every token user everywhere)."""
    from axes.helpers import get_client_username

    username = get_client_username(request, credentials)
    return ["ip_address", "username"] if username else ["ip_address"]


def client_ip(request) -> str:
    """AXES_CLIENT_IP_CALLABLE: the connection's address, or behind a proxy the rightmost address of the header
    it sets (`LCM_CLIENT_IP_HEADER`, e.g. HTTP_X_FORWARDED_FOR), the one the proxy itself saw."""
    header = settings.LCM_CLIENT_IP_HEADER
    if header:
        forwarded = [part.strip() for part in request.META.get(header, "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1][:45]
    return request.META.get("REMOTE_ADDR", "")


def api_lockout(request) -> bool:
    """Whether the address of this (Django) request is locked out of token authentication now."""
    from axes.handlers.proxy import AxesProxyHandler

    if not settings.AXES_ENABLED:
        return False
    return not AxesProxyHandler.is_allowed(request, NO_USERNAME)


def api_failure(request) -> bool:
    """Count a refused API credential against the request's address (as a failed login); True when that failure
    started the lock. The API answers the lock itself, in JSON: axes' flag for its HTML page is cleared."""
    user_login_failed.send(sender=__name__, credentials=dict(NO_USERNAME), request=request)
    locked = bool(getattr(request, "axes_locked_out", False))
    request.axes_locked_out = False
    return locked


def lockout_minutes() -> float:
    """The lock's length in minutes, for messages."""
    cool_off = settings.AXES_COOLOFF_TIME
    return round(cool_off.total_seconds() / 60, 1) if cool_off else 0.0
