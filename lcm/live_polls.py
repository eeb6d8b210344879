"""The unchanged live poll, answered early (SPEC §5.3): `LivePollMiddleware` sits right after the request id,
security and CSP middleware and answers 204 to a poll whose digest is current under its scopes' stamps
(`lcm.live`), before the login session middleware, CSRF, messages, the URL's decorators and the view run.

It answers only when all of this holds, and otherwise hands the request down the chain unchanged (where the
view's own login and role checks decide, and a changed page renders):

- a GET from htmx (`HX-Request`, not boosted) with a digest `?v=` for a URL whose view is a `live_page`;
- the login session (read through `SESSION_ENGINE`: `cached_db` over the shared Redis in production, so no
  query) names a user, with the backend and session hash Django's own `get_user` checks;
- that user's auth record (`auth_record`: session hash and roles, kept in the cache and dropped when the user,
  their groups or any group change, after the commit) verifies the session hash, so a logout, a password
  change or a deactivation is never answered 204;
- this process, or another through the shared cache, remembers rendering that digest for that user *with the
  same roles* under the current stamps (`lcm.live.page_key`, `seen_key`), so a user demoted since the render
  gets the view's 403 (or redirect), not a 204.

No session is saved, no CSRF token made, nothing logged.
"""

import logging
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import DisallowedHost
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.urls import Resolver404, resolve
from django.utils.crypto import constant_time_compare

from lcm import live
from lcm.pages import clean_params

logger = logging.getLogger("lcm.live")

AUTH_TTL = 60  # seconds: bounds what a raw UPDATE of a user (no signal) leaves cached
_GENERATION = "live:auth:gen"


def _auth_key(user_pk) -> str:
    return f"live:auth:{user_pk}"


def auth_record(user) -> dict:
    """What an early poll checks about `user`: the session hash a login of theirs must carry, and their roles."""
    return {"hash": user.get_session_auth_hash(), "roles": live.roles_of(user)}


def _load_record(user_pk, backend_path: str, generation) -> dict | None:
    user = load_backend(backend_path).get_user(user_pk)  # None for a deleted or inactive user
    if user is None or not hasattr(user, "get_session_auth_hash"):
        return None
    record = auth_record(user) | {"gen": generation}
    cache.set(_auth_key(user_pk), record, AUTH_TTL)
    return record


def _signed_in(session, extra_keys) -> tuple | None:
    """((user pk, roles), what the cache holds of `extra_keys(user pk)`) for the user the login session names, when
    the session verifies; None otherwise (go on down). The auth record and the extra keys: one round trip."""
    user_pk, backend_path, session_hash = (session.get(k) for k in (SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY))
    if user_pk is None or not session_hash or backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user_pk = get_user_model()._meta.pk.to_python(user_pk)  # stored as text, remembered as the user's pk
    found = cache.get_many([_GENERATION, _auth_key(user_pk), *extra_keys(user_pk)])
    generation, record = found.get(_GENERATION, 0), found.get(_auth_key(user_pk))
    if record is None or record.get("gen") != generation:
        record = _load_record(user_pk, backend_path, generation)
    if record is None or not constant_time_compare(session_hash, record["hash"]):
        return None  # the full chain flushes (or re-keys, for a rotated secret) the session as Django does
    return (user_pk, record["roles"]), found


class LivePollMiddleware:
    """Answers an unchanged live poll 204 before the rest of the chain (see the module's docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore

    def __call__(self, request):
        if self._unchanged(request):
            return live.unchanged_response()
        return self.get_response(request)

    def _unchanged(self, request) -> bool:
        if (
            request.method != "GET"
            or settings.LCM_LIVE_DIGEST_ONLY
            or request.headers.get("HX-Request") != "true"
            or request.headers.get("HX-Boosted")
        ):
            return False
        digest = request.GET.get("v")
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if not digest or not session_key:
            return False
        try:
            request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware would check it further down
        except DisallowedHost:
            return False
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return False
        scopes = getattr(match.func, "live_scopes", None)
        if scopes is None:
            return False
        names = tuple(scopes(**match.kwargs))
        shared = settings.LCM_LIVE_SHARED_STAMPS
        path, query = request.path, clean_params(request.GET)

        def shared_keys(user_pk) -> list[str]:  # the stamps and the other processes' render, in the same trip
            if not shared:
                return []
            return [live.stamp_key(s) for s in names] + [live.seen_key(live.page_key(user_pk, (), path, query, digest))]

        try:
            signed_in = _signed_in(self.session_store(session_key), shared_keys)
        except Exception:  # the cache or the database did not answer: the full chain decides (and reports)
            logger.warning("live poll: the login session could not be checked early", exc_info=True)
            return False
        if signed_in is None:
            return False
        (user_pk, roles), found = signed_in
        stamp = live.versions(names, cached=True, prefetched=found if shared else None)
        key = live.page_key(user_pk, roles, path, query, digest)
        return live.is_current(key, stamp, prefetched=found if shared else None)


def _forget_user(user_pk) -> None:
    cache.delete(_auth_key(user_pk))
    transaction.on_commit(lambda: cache.delete(_auth_key(user_pk)))  # a read between save and commit re-cached it


def _forget_all() -> None:
    def bump():
        try:
            cache.incr(_GENERATION)
        except ValueError:
            cache.set(_GENERATION, 1, None)

    bump()
    transaction.on_commit(bump)


def _on_user_change(sender, instance, **kwargs):
    _forget_user(instance.pk)


def _on_groups_change(sender, instance, action, reverse, pk_set, **kwargs):
    if not action.startswith("post_"):
        return
    if reverse or pk_set is None:  # changed from the group's side, or cleared: whose roles changed is unknown
        _forget_all()
    else:
        _forget_user(instance.pk)


def _on_group_change(sender, instance, **kwargs):
    _forget_all()  # a renamed or deleted group changes its members' roles


def connect() -> None:
    """Drop the cached auth records whenever a user, a user's groups or a group change."""
    user_model = get_user_model()
    post_save.connect(_on_user_change, sender=user_model, dispatch_uid="lcm.live_polls.user_save")
    post_delete.connect(_on_user_change, sender=user_model, dispatch_uid="lcm.live_polls.user_delete")
    m2m_changed.connect(_on_groups_change, sender=user_model.groups.through, dispatch_uid="lcm.live_polls.groups")
    post_save.connect(_on_group_change, sender=Group, dispatch_uid="lcm.live_polls.group_save")
    post_delete.connect(_on_group_change, sender=Group, dispatch_uid="lcm.live_polls.group_delete")
