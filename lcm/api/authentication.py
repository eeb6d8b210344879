"""REST authentication (SPEC §5.1): API tokens, the browser's Django session, and the internal API key.

`ApiTokenAuthentication` comes first in DEFAULT_AUTHENTICATION_CLASSES so that its
`WWW-Authenticate` header turns a missing or bad credential into 401 (not 403).
"""

import hmac

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from lcm import throttle
from lcm.api.tokens import TokenRefused, token_authenticate

INTERNAL_HEADER = "X-API-Key"


def internal_key_valid(supplied: str) -> bool:
    """Whether `supplied` is the internal API key, compared in constant time (an empty key never matches)."""
    expected = settings.INTERNAL_API_KEY
    if not expected or not isinstance(supplied, str):
        return False
    return hmac.compare_digest(supplied.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


class LockedOut(exceptions.APIException):
    """429: this address failed too often; even a right token is refused until the lock ends (SPEC §12)."""

    status_code = 429
    default_code = "locked_out"

    def __init__(self):
        super().__init__(
            f"Too many failed sign-ins from this address: locked for {throttle.lockout_minutes():g} minutes."
        )


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Token <key>` or `Authorization: Bearer <key>`; `request.auth` is the ApiToken.

    Throttled like the login page (`lcm.throttle`): a refused key counts as a failed sign-in of the client
    address, and a locked-out address is refused (429) before its key is looked at."""

    keywords = ("token", "bearer")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode("latin-1").lower() not in self.keywords:
            return None
        if throttle.api_lockout(request._request):
            raise LockedOut()
        try:
            return self._authenticate(header)
        except exceptions.AuthenticationFailed:
            if throttle.api_failure(request._request):
                raise LockedOut() from None
            raise

    def _authenticate(self, header: list[bytes]):
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: expected 'Token <key>' or 'Bearer <key>'.")
        try:
            key = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token header: the key must be ASCII.") from None
        try:
            token = token_authenticate(key)
        except TokenRefused as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        return token.user, token

    def authenticate_header(self, request):
        return 'Token realm="api"'


class InternalCaller:
    """The principal of a request authenticated with the internal API key (controllers and tools)."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = None
    username = "internal-api"

    def get_username(self) -> str:
        return self.username

    def __str__(self):
        return self.username


class InternalApiKeyAuthentication(authentication.BaseAuthentication):
    """`X-API-Key: <LCM_INTERNAL_API_KEY>`, compared in constant time; nothing else is accepted here. Throttled
    like the tokens."""

    def authenticate(self, request):
        supplied = request.headers.get(INTERNAL_HEADER)
        if supplied is None:
            return None
        if throttle.api_lockout(request._request):
            raise LockedOut()
        if not internal_key_valid(supplied):
            if throttle.api_failure(request._request):
                raise LockedOut()
            raise exceptions.AuthenticationFailed(f"Invalid {INTERNAL_HEADER}.")
        return InternalCaller(), INTERNAL_HEADER

    def authenticate_header(self, request):
        return f'ApiKey header="{INTERNAL_HEADER}"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """OpenAPI: the token scheme (`Token <key>`; `Bearer <key>` is accepted too)."""

    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>` or `Bearer <key>`; keys come from `manage.py token_create` or the admin.",
        }


class InternalApiKeyScheme(OpenApiAuthenticationExtension):
    """OpenAPI: the internal API key header."""

    target_class = InternalApiKeyAuthentication
    name = "internalApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": INTERNAL_HEADER,
            "description": "The deployment's `LCM_INTERNAL_API_KEY` (controllers and tools only).",
        }
