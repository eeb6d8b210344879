"""Change stamps for live pages (SPEC §5.3): an unchanged poll is answered without rendering.

Every live page names its scopes: `global` (anything changed: dashboard, lists, fleet pages),
`session:<id>` (one session's page) or `exam:<id>` (one exam's roster). Writers bump the scopes they
touch through `bump`: the one history writer (`lcm.fsm.record_changes`) and a `post_save`/`post_delete`
receiver on the product apps' models (`connect`). A bump counts twice:

- at once in this process (`_local`), so the next poll served here sees it even before the commit;
- after the commit in the `live_stamps` table (one `INSERT … ON CONFLICT … RETURNING` per bump), so every
  web process sees changes made by the loops, Celery or the other workers;
- with a shared Redis cache (`LCM_LIVE_SHARED_STAMPS`), right after that in the cache: each key raised to the
  table's new version (an atomic max, so it never moves back), a missing key seeded from the table.

A poll reads its scopes' versions (from the shared cache: one round trip, which `lcm.live_polls` shares with
the login check; without one, one query cached here for `LCM_LIVE_STAMP_TTL` seconds and dropped by any
local bump) and compares them with the versions under which the digest it shows was last rendered for the
same user and roles (`page_key`, `remember`/`is_current`). Time-dependent content (time left, "3 min ago") still
refreshes: a remembered render is trusted for at most `LCM_LIVE_REFRESH_SECONDS`.
`LCM_LIVE_DIGEST_ONLY=1` turns all of this off (every poll renders and compares digests; the peer
`bench_pages` measures).
"""

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save
from django.http import HttpResponse, QueryDict
from django.utils.cache import patch_vary_headers

from lcm.roles import is_admin, is_instructor

logger = logging.getLogger("lcm.live")

GLOBAL = "global"
TABLE = "live_stamps"
_PRODUCT_APPS = {"lablets", "workers", "scheduling", "grading"}
_SEEN_MAX = 20_000

_lock = threading.Lock()
_local: dict[str, int] = defaultdict(int)
_read_cache: dict[tuple, tuple[float, tuple]] = {}
_seen: OrderedDict[tuple, tuple[tuple, float]] = OrderedDict()
_expanders: list[Callable[[set[str]], set[str]]] = []


def register_expander(expander: Callable[[set[str]], set[str]]) -> None:
    """Add a function naming further scopes a committed bump touches (e.g. a session's exam)."""
    _expanders.append(expander)


def bump(scopes: Iterable[str]) -> None:
    """Mark `scopes` (and `global`) changed: now in this process, in the database once the transaction commits."""
    touched = set(scopes) | {GLOBAL}
    with _lock:
        for scope in touched:
            _local[scope] += 1
    transaction.on_commit(lambda: _bump_committed(touched))


def _bump_committed(scopes: set[str]) -> None:
    try:
        for expander in _expanders:
            scopes = scopes | expander(scopes)
        ordered = sorted(scopes)  # one order for every writer: no deadlock between two bumps
        values = ", ".join(["(%s, 1)"] * len(ordered))
        sql = (
            f"INSERT INTO {TABLE} (scope, version) VALUES {values} "  # noqa: S608 - placeholders only
            f"ON CONFLICT (scope) DO UPDATE SET version = {TABLE}.version + 1 RETURNING scope, version"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, ordered)
            bumped = dict(cursor.fetchall())
        if settings.LCM_LIVE_SHARED_STAMPS:
            _raise_shared(bumped)
    except Exception:  # a stamp never undoes a committed change; the refresh interval bounds the staleness
        logger.exception("live stamp bump failed for %s", sorted(scopes))
    with _lock:
        _read_cache.clear()


# Raise each key to at least its version: concurrent bumps and a reader seeding a missing key from the table
# leave the highest, so a shared stamp only ever moves forward and always equals a version the table had.
_RAISE = """
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[i])
  if version > tonumber(redis.call('GET', key) or '-1') then redis.call('SET', key, version) end
end
"""


def stamp_key(scope: str) -> str:
    """The shared cache's key of a scope's stamp (`LCM_LIVE_SHARED_STAMPS`)."""
    return f"live:stamp:{scope}"


def _raise_shared(found: dict[str, int]) -> None:
    if found:
        keys = [cache.make_key(stamp_key(scope)) for scope in found]
        cache.raw_client().eval(_RAISE, len(keys), *keys, *found.values())


def _stored(scopes: tuple[str, ...]) -> dict[str, int]:
    placeholders = ", ".join(["%s"] * len(scopes))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT scope, version FROM {TABLE} WHERE scope IN ({placeholders})", list(scopes))  # noqa: S608
        found = dict(cursor.fetchall())
    return {scope: found.get(scope, 0) for scope in scopes}


def _shared(scopes: tuple[str, ...], prefetched: dict | None) -> tuple:
    """The stamps from the shared cache (`prefetched`: what the caller's `get_many` of `stamp_key`s found);
    a missing one (a restarted Redis) is read from the table and seeded."""
    found = prefetched if prefetched is not None else cache.get_many([stamp_key(s) for s in scopes])
    missing = tuple(s for s in scopes if stamp_key(s) not in found)
    seeded = {}
    if missing:
        seeded = _stored(missing)
        _raise_shared(seeded)
    return tuple(found[stamp_key(s)] if s not in seeded else seeded[s] for s in scopes)


def versions(scopes: tuple[str, ...], *, cached: bool = True, prefetched: dict | None = None) -> tuple:
    """The scopes' versions: (committed versions, this process's local bumps). With `LCM_LIVE_SHARED_STAMPS` the
    committed ones come from the shared cache (one round trip, none with `prefetched`); otherwise from the table
    (at most one query, none when `cached` and this process read them less than `LCM_LIVE_STAMP_TTL` ago)."""
    now = time.monotonic()
    with _lock:
        local = tuple(_local.get(s, 0) for s in scopes)
        recent = _read_cache.get(scopes) if cached else None
    if settings.LCM_LIVE_SHARED_STAMPS:
        try:
            return _shared(scopes, prefetched), local
        except Exception:  # the cache did not answer: the table decides, as without one
            logger.warning("live stamps: the shared cache did not answer; reading the table", exc_info=True)
    if recent and now - recent[0] < settings.LCM_LIVE_STAMP_TTL:
        return recent[1], local
    stored = tuple(_stored(scopes).values())
    with _lock:
        _read_cache[scopes] = (now, stored)
    return stored, local


def roles_of(user) -> tuple[bool, bool]:
    """The roles a live page's permission depends on: (admin, instructor)."""
    return is_admin(user), is_instructor(user)


def page_key(user_pk, roles: tuple, path: str, query: QueryDict, digest: str) -> tuple:
    """What a remembered render is filed under: the user and their roles (a demoted user misses it), the page
    and its query (without the digest), the digest the browser shows."""
    rest = query.copy()
    rest.pop("v", None)
    return (user_pk, tuple(roles), path, rest.urlencode(), digest)


def unchanged_response() -> HttpResponse:
    """204: the browser keeps what it shows (htmx swaps nothing)."""
    response = HttpResponse(status=204)
    patch_vary_headers(response, ["HX-Request"])
    response["Cache-Control"] = "no-store"
    return response


def seen_key(key: tuple) -> str:
    """The shared cache's key of a remembered render (`page_key` less the roles, which its value carries)."""
    user_pk, _roles, path, query, digest = key
    return "live:seen:" + hashlib.blake2s(repr((user_pk, path, query, digest)).encode(), digest_size=16).hexdigest()


def remember(key: tuple, stamp: tuple) -> None:
    """Record that the page `key` (`page_key`) was current under `stamp` just now: in this process and, with
    shared stamps, in the shared cache, so the other web processes need not render it again."""
    with _lock:
        _seen[key] = (stamp, time.monotonic())
        _seen.move_to_end(key)
        while len(_seen) > _SEEN_MAX:
            _seen.popitem(last=False)
    if settings.LCM_LIVE_SHARED_STAMPS:
        refresh = settings.LCM_LIVE_REFRESH_SECONDS
        try:
            cache.set(seen_key(key), (key[1], stamp[0], time.time()), timeout=max(1, math.ceil(refresh)))
        except Exception:  # this process still remembers it
            logger.warning("live stamps: the shared cache did not take a render", exc_info=True)


def is_current(key: tuple, stamp: tuple, *, prefetched: dict | None = None) -> bool:
    """True when `key` was rendered under `stamp` less than `LCM_LIVE_REFRESH_SECONDS` ago: by this process, or
    (shared stamps) by any, for the same roles under the same committed stamps (`prefetched`: a `get_many`
    that asked for `seen_key(key)`)."""
    refresh = settings.LCM_LIVE_REFRESH_SECONDS
    with _lock:
        seen = _seen.get(key)
    if seen and seen[0] == stamp and time.monotonic() - seen[1] < refresh:
        return True
    if not settings.LCM_LIVE_SHARED_STAMPS:
        return False
    try:
        shared = prefetched.get(seen_key(key)) if prefetched is not None else cache.get(seen_key(key))
    except Exception:
        return False
    return bool(shared) and shared[:2] == (key[1], stamp[0]) and time.time() - shared[2] < refresh


def scopes_of(instance) -> set[str]:
    """The scopes a saved or deleted row touches: its session (and exam) when it names one."""
    scopes = set()
    meta = instance._meta
    if meta.model_name == "labletsession":
        scopes.add(f"session:{instance.pk}")
    if meta.model_name == "exam":
        scopes.add(f"exam:{instance.pk}")
    for field, prefix in (("session_id", "session"), ("active_session_id", "session"), ("exam_id", "exam")):
        value = getattr(instance, field, None)
        if value is not None:
            scopes.add(f"{prefix}:{value}")
    return scopes


def _on_row_change(sender, instance, **kwargs):
    if sender._meta.app_label in _PRODUCT_APPS:
        bump(scopes_of(instance))


def connect() -> None:
    """Bump stamps on every save and delete of a product model (bulk writes call `bump` themselves)."""
    post_save.connect(_on_row_change, dispatch_uid="lcm.live.save")
    post_delete.connect(_on_row_change, dispatch_uid="lcm.live.delete")
