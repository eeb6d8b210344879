"""Single sign-on with OpenID Connect (SPEC §12), beside local accounts, through mozilla-django-oidc.

Authorization code flow with PKCE (S256) and a nonce. The provider is `LCM_OIDC_ISSUER`; its endpoints come
from its discovery document (cached for a few minutes), so nothing is fetched at import time and LCM starts
while the provider is down. The ID token must be RS256, signed by a key of the provider's JWKS, issued by
`LCM_OIDC_ISSUER` for `LCM_OIDC_CLIENT_ID` (audience, and `azp` when it names several), unexpired and carry
the nonce; the userinfo answer must be about the same `sub`.

Roles come from the `groups` claim (userinfo, else the ID token; Keycloak's `/name` paths are accepted):
`LCM_OIDC_ADMIN_GROUP` makes an admin (staff and superuser, like the local admin, in group `lcm-admins`),
`LCM_OIDC_INSTRUCTOR_GROUP` an instructor (group `instructors`); the role is set again at every sign-in. A
user in neither group is refused with a page saying why, and so is every token or answer that fails a check.
Accounts are matched by (issuer, sub) only (`OidcIdentity`): a local account is never taken over by name or
e-mail; users made here have no usable password.
"""

import logging
import time

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from lcm.models import OidcIdentity
from lcm.roles import ADMIN_GROUP, INSTRUCTOR_GROUP

logger = logging.getLogger("lcm.oidc")

DISCOVERY_TTL_SECONDS = 300.0
ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
MAX_REASON = 300  # characters of a provider's error description shown on the refusal page

_discovered: dict[str, tuple[float, dict]] = {}


class SignInRefused(Exception):
    """Single sign-on cannot go on; the message is shown to the person on the refusal page."""


def enabled() -> bool:
    return bool(settings.LCM_OIDC_ISSUER)


def sso_context(request) -> dict:
    """Template context processor: whether the login page offers "Sign in with SSO"."""
    return {"sso_enabled": enabled()}


def provider() -> dict:
    """The issuer's discovery document (cached); `SignInRefused` when it cannot be had or does not fit."""
    issuer = settings.LCM_OIDC_ISSUER
    cached = _discovered.get(issuer)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    try:
        response = requests.get(
            f"{issuer}/.well-known/openid-configuration", timeout=_timeout(), verify=settings.LCM_OIDC_VERIFY_TLS
        )
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError):
        logger.warning("single sign-on: no discovery document from %s", issuer)
        raise SignInRefused("The identity provider does not answer. Try again later or use a local account.") from None
    if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer:
        raise SignInRefused("The identity provider's discovery document names another issuer.")
    if any(not isinstance(document.get(key), str) for key in ENDPOINTS.values()):
        raise SignInRefused("The identity provider's discovery document lacks an endpoint LCM needs.")
    _discovered[issuer] = (time.monotonic() + DISCOVERY_TTL_SECONDS, document)
    return document


def forget_provider() -> None:
    """Drop the cached discovery documents (tests: a new provider on another port)."""
    _discovered.clear()


def _timeout() -> tuple[float, float]:
    return (settings.LCM_HTTP_CONNECT_TIMEOUT, settings.LCM_HTTP_READ_TIMEOUT)


def oidc_setting(name: str, *default):
    """mozilla-django-oidc's settings, taken from LCM's: endpoints from discovery, the client from LCM_OIDC_*."""
    if name in ENDPOINTS:
        return provider()[ENDPOINTS[name]]
    ours = {
        "OIDC_RP_CLIENT_ID": settings.LCM_OIDC_CLIENT_ID,
        "OIDC_RP_CLIENT_SECRET": settings.LCM_OIDC_CLIENT_SECRET,
        "OIDC_VERIFY_SSL": settings.LCM_OIDC_VERIFY_TLS,
        "OIDC_TIMEOUT": _timeout(),
        "OIDC_RP_IDP_SIGN_KEY": None,
        "OIDC_ALLOW_UNSECURED_JWT": False,
    }
    if name in ours:
        return ours[name]
    return import_from_settings(name, *default)


def role_for(groups) -> str | None:
    """`admin`, `instructor` or None from the provider's group names."""
    names = {group.lstrip("/") for group in groups if isinstance(group, str)} if isinstance(groups, list) else set()
    if settings.LCM_OIDC_ADMIN_GROUP in names:
        return "admin"
    if settings.LCM_OIDC_INSTRUCTOR_GROUP in names:
        return "instructor"
    return None


def refuse(request, reason: str) -> None:
    """Remember why this sign-in is refused, for the callback's refusal page (the first reason wins)."""
    if request is not None and not getattr(request, "lcm_sso_refusal", None):
        request.lcm_sso_refusal = reason


class OidcBackend(OIDCAuthenticationBackend):
    """The single sign-on backend: answers only the callback (a `code` and `state` in the query) while
    LCM_OIDC_ISSUER is set; any check that fails makes it answer None with the reason on the request."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args, **kwargs):
        # The parent reads the endpoints here; ours come from discovery, at sign-in time.
        self.UserModel = get_user_model()
        self.OIDC_RP_SIGN_ALGO = "RS256"
        self.OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request, **kwargs):
        if not enabled() or request is None or "username" in kwargs or "password" in kwargs:
            return None
        if not (request.GET.get("code") and request.GET.get("state")):
            return None
        try:
            self.OIDC_OP_TOKEN_ENDPOINT = oidc_setting("OIDC_OP_TOKEN_ENDPOINT")
            self.OIDC_OP_USER_ENDPOINT = oidc_setting("OIDC_OP_USER_ENDPOINT")
            self.OIDC_OP_JWKS_ENDPOINT = oidc_setting("OIDC_OP_JWKS_ENDPOINT")
            self.OIDC_RP_CLIENT_ID = settings.LCM_OIDC_CLIENT_ID
            self.OIDC_RP_CLIENT_SECRET = settings.LCM_OIDC_CLIENT_SECRET
            return super().authenticate(request, **kwargs)
        except SignInRefused as exc:
            refuse(request, str(exc))
        except jwt.PyJWTError as exc:
            logger.warning("single sign-on: ID token refused: %s", exc)
            refuse(request, f"The identity provider's ID token was refused ({exc}).")
        except (SuspiciousOperation, requests.RequestException, KeyError, TypeError, ValueError) as exc:
            logger.warning("single sign-on refused: %s: %s", exc.__class__.__name__, exc)
            refuse(request, "The identity provider's answer could not be verified.")
        return None

    def get_user(self, user_id):
        """Sessions made by single sign-on end when it is switched off."""
        return super().get_user(user_id) if enabled() else None

    # -- the ID token --------------------------------------------------------------------

    def get_payload_data(self, token, key):
        """The ID token's claims: RS256 only, our audience, the issuer, an unexpired token (30 s leeway)."""
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=settings.LCM_OIDC_CLIENT_ID,
            issuer=settings.LCM_OIDC_ISSUER,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            leeway=30,
        )
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != settings.LCM_OIDC_CLIENT_ID:
            raise jwt.InvalidAudienceError("azp is not this client")
        return claims

    # -- the user ------------------------------------------------------------------------

    def get_userinfo(self, access_token, id_token, payload):
        """The userinfo claims over the ID token's, checked to be about the same subject."""
        info = super().get_userinfo(access_token, id_token, payload)
        if not isinstance(info, dict) or info.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("userinfo is about another subject than the ID token")
        return {**payload, **info}

    def verify_claims(self, claims):
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            refuse(self.request, "The identity provider did not say who you are (no subject).")
            return False
        if role_for(claims.get("groups")) is None:
            refuse(
                self.request,
                "Your account at the identity provider is in neither LCM group "
                f"({settings.LCM_OIDC_ADMIN_GROUP}, {settings.LCM_OIDC_INSTRUCTOR_GROUP}), so it has no access "
                "to LCM. Ask an LCM admin to add you to one.",
            )
            return False
        return True

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(
            oidc_identity__issuer=settings.LCM_OIDC_ISSUER, oidc_identity__subject=claims["sub"]
        )

    def create_user(self, claims):
        with transaction.atomic():
            user = self.UserModel.objects.create_user(
                _free_username(claims), email=str(claims.get("email") or "")[:254]
            )
            user.set_unusable_password()
            user.save(update_fields=["password"])
            OidcIdentity.objects.create(user=user, issuer=settings.LCM_OIDC_ISSUER, subject=claims["sub"])
        logger.info("single sign-on: user %s created for %s", user.get_username(), claims["sub"])
        return self.update_user(user, claims)

    def update_user(self, user, claims):
        """Set the role (groups, staff, superuser) and the e-mail from this sign-in's claims."""
        role = role_for(claims.get("groups"))
        with transaction.atomic():
            admin_group, _ = Group.objects.get_or_create(name=ADMIN_GROUP)
            instructor_group, _ = Group.objects.get_or_create(name=INSTRUCTOR_GROUP)
            user.is_staff = user.is_superuser = role == "admin"
            user.email = str(claims.get("email") or user.email)[:254]
            user.save(update_fields=["is_staff", "is_superuser", "email"])
            user.groups.remove(admin_group, instructor_group)
            user.groups.add(admin_group if role == "admin" else instructor_group)
            OidcIdentity.objects.filter(user=user).update(
                groups=[g for g in claims.get("groups") or [] if isinstance(g, str)][:100], last_login_at=timezone.now()
            )
        return user


def _free_username(claims) -> str:
    """The provider's preferred username (else the e-mail, else the subject), suffixed when a local user has it."""
    user_model = get_user_model()
    base = str(claims.get("preferred_username") or claims.get("email") or claims["sub"])[:140]
    candidate, number = base, 1
    while user_model.objects.filter(username=candidate).exists():
        number += 1
        candidate = f"{base}-sso{number if number > 2 else ''}"
    return candidate


# -- views ---------------------------------------------------------------------------------------


def refused_page(request, reason: str, status: int = 403):
    return render(request, "registration/sso_refused.html", {"reason": reason}, status=status)


class OidcSignIn(OIDCAuthenticationRequestView):
    """`/oidc/authenticate/`: off to the provider's authorization endpoint (state, nonce, PKCE challenge)."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # the parent reads the endpoint here; ours comes from discovery

    def get(self, request):
        if not enabled():
            raise Http404("single sign-on is not configured")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except SignInRefused as exc:
            return refused_page(request, str(exc), status=503)
        self.OIDC_RP_CLIENT_ID = settings.LCM_OIDC_CLIENT_ID
        return super().get(request)


class OidcCallback(OIDCAuthenticationCallbackView):
    """`/oidc/callback/`: the provider's answer; signs the user in, or shows why not (403)."""

    get_settings = staticmethod(oidc_setting)

    def get(self, request):
        if not enabled():
            raise Http404("single sign-on is not configured")
        try:
            return super().get(request)
        except SuspiciousOperation:
            return refused_page(request, "This sign-in was not started here or was already used. Start again.", 400)

    def login_failure(self):
        reason = getattr(self.request, "lcm_sso_refusal", None)
        if reason is None and self.request.GET.get("error"):
            said = self.request.GET.get("error_description") or self.request.GET["error"]
            reason = f"The identity provider refused the sign-in: {said[:MAX_REASON]}"
        if reason is None and getattr(self, "user", None) is not None and not self.user.is_active:
            reason = "This account is deactivated in LCM."
        return refused_page(self.request, reason or "Single sign-on failed. Start again.")
