"""Writers and the lookup for API tokens: the only code that creates, revokes or checks one.

A key is `lcm_` + 43 URL-safe random characters (256 bits). Only its SHA-256 is stored
(`ApiToken.key_hash`); a high-entropy key needs no slow password hash. The key is
returned once by `token_create` and never again.
"""

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from lcm.fsm import actor_name
from lcm.models import ApiToken

logger = logging.getLogger("lcm.api.tokens")

KEY_PREFIX = "lcm_"
# How many characters of the key are kept in clear to tell tokens apart.
SHOWN_PREFIX_LENGTH = 12
MAX_EXPIRY_DAYS = 3650
# `last_used_at` is refreshed at most this often, so authenticating is not a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class NewToken:
    """A freshly created token and its key (the only time the key exists outside the client)."""

    token: ApiToken
    key: str


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def token_create(user, *, actor, name: str = "", expires_days: int | None = None) -> NewToken:
    """Create an API token for `user`; returns it with its key, which is never shown again.

    Raises ValidationError naming `user`, `name` or `expires_days`.
    """
    errors: dict[str, list[str]] = {}
    if not isinstance(user, get_user_model()):
        errors["user"] = ["must be a user"]
    elif not user.is_active:
        errors["user"] = [f"user {user.get_username()!r} is inactive"]
    name = str(name or "").strip()
    if len(name) > 100:
        errors["name"] = ["must be at most 100 characters"]
    if expires_days is not None and (
        isinstance(expires_days, bool) or not isinstance(expires_days, int) or not 1 <= expires_days <= MAX_EXPIRY_DAYS
    ):
        errors["expires_days"] = [f"must be a whole number of days between 1 and {MAX_EXPIRY_DAYS}"]
    if errors:
        raise ValidationError(errors)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name,
            key_prefix=key[:SHOWN_PREFIX_LENGTH],
            key_hash=hash_key(key),
            expires_at=expires_at,
        )
    logger.info(
        "API token %s (%s…) created for %s by %s", token.pk, token.key_prefix, user.get_username(), actor_name(actor)
    )
    return NewToken(token=token, key=key)


def token_revoke(token: ApiToken, *, actor) -> ApiToken:
    """Revoke a token for good (idempotent)."""
    with transaction.atomic():
        locked = ApiToken.objects.select_for_update().get(pk=token.pk)
        if not locked.revoked:
            locked.revoked = True
            locked.save(update_fields=["revoked"])
            logger.info("API token %s (%s…) revoked by %s", locked.pk, locked.key_prefix, actor_name(actor))
    return locked


class TokenRefused(Exception):
    """The key is unknown, revoked, expired or belongs to an inactive user; the message says which."""


def token_authenticate(key: str) -> ApiToken:
    """The usable token for `key` (with its user loaded), or TokenRefused.

    The lookup is by hash through a unique index, then the stored hash is compared in
    constant time. `last_used_at` is refreshed when older than LAST_USED_RESOLUTION.
    """
    digest = hash_key(key)
    token = ApiToken.objects.select_related("user").filter(key_hash=digest).first()
    if token is None or not hmac.compare_digest(token.key_hash, digest):
        raise TokenRefused("Invalid token.")
    if token.revoked:
        raise TokenRefused("Token has been revoked.")
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        raise TokenRefused("Token has expired.")
    if not token.user.is_active:
        raise TokenRefused("User inactive or deleted.")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # A plain UPDATE, not a locked read: concurrent requests with one token never wait on each other.
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
