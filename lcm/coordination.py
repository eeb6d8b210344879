"""Coordination (SPEC §4): leader leases, the live key projection and watches.

The only module that talks to etcd (python-etcd3's API via `pyetcd`). With
`LCM_ETCD_ENDPOINTS` unset, an in-process stand-in serves the embedded default. etcd holds
nothing PostgreSQL does not: if it is down, writes are skipped (logged), leadership is
assumed (placement stays safe through row locks) and the loops run from their ticks.
"""

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlparse

from django.conf import settings

logger = logging.getLogger("lcm.coordination")

PREFIX = "/lcm"
LEADER_TTL_SECONDS = 15


def session_status_key(session_id) -> str:
    return f"{PREFIX}/sessions/{session_id}/status"


def session_ports_key(session_id) -> str:
    return f"{PREFIX}/sessions/{session_id}/ports"


def worker_key(worker_id, which: str) -> str:
    return f"{PREFIX}/workers/{worker_id}/{which}"


def leader_key(loop: str) -> str:
    return f"{PREFIX}/leader/{loop}"


def holder_id() -> str:
    """Who this process is, as written into leader keys."""
    return f"{os.uname().nodename}:{os.getpid()}:{_PROCESS_TOKEN}"


_PROCESS_TOKEN = uuid.uuid4().hex[:8]


class InProcessCoordinator:
    """A dict with leases and prefix watches, for one process (the embedded default and unit tests)."""

    def __init__(self):
        self._data: dict[str, str] = {}
        self._expiry: dict[str, float] = {}
        self._watchers: list[tuple[str, Callable]] = []
        self._lock = threading.RLock()

    def _expire(self):
        now = time.monotonic()
        for key in [k for k, t in self._expiry.items() if t <= now]:
            self._expiry.pop(key, None)
            self._data.pop(key, None)

    def get(self, key: str) -> str | None:
        with self._lock:
            self._expire()
            return self._data.get(key)

    def get_prefix(self, prefix: str) -> dict[str, str]:
        with self._lock:
            self._expire()
            return {k: v for k, v in self._data.items() if k.startswith(prefix)}

    def put_if_changed(self, key: str, value: str) -> bool:
        with self._lock:
            if self._data.get(key) == value:
                return False
            self._data[key] = value
        self._notify("put", key, value)
        return True

    def delete(self, key: str) -> bool:
        with self._lock:
            existed = self._data.pop(key, None) is not None
            self._expiry.pop(key, None)
        if existed:
            self._notify("delete", key, None)
        return existed

    def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)

    def put_many_if_changed(self, items: dict[str, str]) -> list[str]:
        return [key for key, value in items.items() if self.put_if_changed(key, value)]

    def try_lead(self, loop: str, ttl: int = LEADER_TTL_SECONDS) -> bool:
        key, me = leader_key(loop), holder_id()
        with self._lock:
            self._expire()
            if self._data.get(key) not in (None, me):
                return False
            self._data[key] = me
            self._expiry[key] = time.monotonic() + ttl
            return True

    def resign(self, loop: str) -> None:
        with self._lock:
            if self._data.get(leader_key(loop)) == holder_id():
                self._data.pop(leader_key(loop), None)
                self._expiry.pop(leader_key(loop), None)

    def leader(self, loop: str) -> str | None:
        return self.get(leader_key(loop))

    def watch_prefix(self, prefix: str, callback: Callable[[str, str, str | None], None]) -> "Watch":
        entry = (prefix, callback)
        with self._lock:
            self._watchers.append(entry)

        def cancel():
            with self._lock:
                if entry in self._watchers:
                    self._watchers.remove(entry)

        return Watch(cancel)

    def _notify(self, kind: str, key: str, value: str | None) -> None:
        with self._lock:
            watchers = [cb for prefix, cb in self._watchers if key.startswith(prefix)]
        for callback in watchers:
            try:
                callback(kind, key, value)
            except Exception:
                logger.exception("watch callback failed for %s", key)

    def healthy(self) -> bool:
        return True


class Watch:
    """A running watch: call it to cancel; `broken` when its stream failed and it must be watched again."""

    def __init__(self, cancel: Callable[[], None] | None = None):
        self.cancel = cancel or (lambda: None)
        self.broken = False

    def __call__(self) -> None:
        self.cancel()


# A client is replaced after a failure, and its channel must not inherit the old one's reconnect backoff
# (gRPC shares subchannels across channels by default; after a 30 s outage the shared one waited ~16 s more
# before trying etcd again). Its own subchannel, and retries at most a second apart, follow etcd's return.
GRPC_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class EtcdCoordinator:
    """etcd through pyetcd; the client is created lazily per process (after a fork)."""

    def __init__(self, endpoints: str, timeout: float = 2.0):
        first = endpoints.split(",")[0].strip()
        parsed = urlparse(first if "://" in first else f"http://{first}")
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 2379
        self.timeout = timeout
        self._client = None
        self._pid = None
        self._leases: dict[str, object] = {}
        self._lock = threading.RLock()
        self._degraded = False

    @property
    def client(self):
        if self._client is None or self._pid != os.getpid():
            import pyetcd

            self._client = pyetcd.client(
                host=self.host, port=self.port, timeout=self.timeout, grpc_options=GRPC_OPTIONS
            )
            self._pid = os.getpid()
            self._leases = {}
        return self._client

    def _safe(self, what: str, fn, default=None):
        try:
            result = fn()
        except Exception as exc:  # etcd down or slow: degrade to database + ticks only
            if not self._degraded:  # one line per outage, not one per call
                self._degraded = True
                logger.warning("etcd %s failed (%s); carrying on without it", what, exc.__class__.__name__)
            with self._lock:
                self._client = None
            return default
        if self._degraded:
            self._degraded = False
            logger.warning("etcd answers again")
        return result

    def get(self, key: str) -> str | None:
        def _get():
            value, _meta = self.client.get(key)
            return value.decode() if value is not None else None

        return self._safe("get", _get)

    def get_prefix(self, prefix: str) -> dict[str, str]:
        def _get():
            return {meta.key.decode(): value.decode() for value, meta in self.client.get_prefix(prefix)}

        return self._safe("get_prefix", _get, {})

    def put_if_changed(self, key: str, value: str) -> bool:
        """One round trip: a transaction that puts unless the key already holds `value` (a missing key differs)."""

        def _put():
            ops = self.client.transactions
            unchanged, _responses = self.client.transaction(
                compare=[ops.value(key) == value], success=[], failure=[ops.put(key, value)]
            )
            return not unchanged

        return bool(self._safe("put", _put, False))

    def put_many_if_changed(self, items: dict[str, str]) -> list[str]:
        """`put_if_changed` for several keys in one round trip (a transaction of one nested
        compare-and-put per key); returns the keys written."""

        def _put():
            from pyetcd.transactions import Txn

            ops = self.client.transactions
            nested = [Txn([ops.value(key) == value], [], [ops.put(key, value)]) for key, value in items.items()]
            _ok, responses = self.client.transaction(compare=[], success=nested, failure=[])
            return [key for key, r in zip(items, responses, strict=True) if not r.response_txn.succeeded]

        return self._safe("put", _put, [])

    def delete(self, key: str) -> bool:
        return bool(self._safe("delete", lambda: self.client.delete(key), False))

    def delete_many(self, keys: list[str]) -> None:
        """Delete several keys in one round trip (one transaction)."""

        def _delete():
            ops = self.client.transactions
            self.client.transaction(compare=[], success=[ops.delete(key) for key in keys], failure=[])

        self._safe("delete", _delete)

    def try_lead(self, loop: str, ttl: int = LEADER_TTL_SECONDS) -> bool:
        key, me = leader_key(loop), holder_id()

        def _lead():
            with self._lock:
                lease = self._leases.get(loop)
                current, meta = self.client.get(key)
                if current is not None and current.decode() == me:
                    if lease is None and getattr(meta, "lease_id", 0):
                        # Ours, held through an etcd restart by a client since replaced: adopt the lease
                        # rather than wait for it to expire (placement would stall a whole TTL).
                        import pyetcd  # Imported here: pyetcd loads only when etcd is configured.

                        lease = pyetcd.Lease(meta.lease_id, ttl, self.client)
                        self._leases[loop] = lease
                    if lease is not None:
                        lease.refresh()
                        return True
                if current is not None:
                    return False
                lease = self.client.lease(ttl)
                if self.client.put_if_not_exists(key, me, lease=lease):
                    self._leases[loop] = lease
                    return True
                lease.revoke()
                return False

        # With etcd unreachable every process may act as leader: placement stays correct through row locks.
        return bool(self._safe("leader lease", _lead, True))

    def resign(self, loop: str) -> None:
        def _resign():
            with self._lock:
                lease = self._leases.pop(loop, None)
                if lease is not None:
                    lease.revoke()

        self._safe("resign", _resign)

    def leader(self, loop: str) -> str | None:
        return self.get(leader_key(loop))

    def watch_prefix(self, prefix: str, callback: Callable[[str, str, str | None], None]) -> "Watch":
        """Call `callback(kind, key, value)` for each change under `prefix` (from a pyetcd thread).

        Returns the `Watch`: call it to cancel; `broken` turns true when its stream failed (pyetcd then
        drops the callback, so the caller must watch again). A failure to start the watch forgets the
        client, so the next attempt connects afresh (a client whose node failed refuses every call).
        """
        from pyetcd.events import DeleteEvent  # Imported here: pyetcd loads only when etcd is configured.

        watch = Watch()

        def _on_response(response):
            if isinstance(response, Exception):
                watch.broken = True
                logger.warning("etcd watch stream failed (%s); watching again", response.__class__.__name__)
                return
            for event in response.events:
                kind = "delete" if isinstance(event, DeleteEvent) else "put"
                value = event.value.decode() if kind == "put" and event.value is not None else None
                try:
                    callback(kind, event.key.decode(), value)
                except Exception:
                    logger.exception("watch callback failed")

        try:
            client = self.client
            watch_id = client.add_watch_prefix_callback(prefix, _on_response)
        except Exception:
            with self._lock:
                self._client = None
            raise
        watch.cancel = lambda: self._safe("cancel watch", lambda: client.cancel_watch(watch_id))
        return watch

    def healthy(self) -> bool:
        return self._safe("status", lambda: self.client.status() is not None, False)


_coordinator = None
_coordinator_lock = threading.Lock()


def coordinator():
    """The process's coordinator: etcd when `LCM_ETCD_ENDPOINTS` is set, else the in-process stand-in."""
    global _coordinator
    with _coordinator_lock:
        if _coordinator is None:
            endpoints = getattr(settings, "LCM_ETCD_ENDPOINTS", "")
            _coordinator = EtcdCoordinator(endpoints) if endpoints else InProcessCoordinator()
        return _coordinator


def reset_coordinator() -> None:
    """Forget the process's coordinator (tests switch backends)."""
    global _coordinator
    with _coordinator_lock:
        _coordinator = None


# --- the projection of SPEC §4, fed by lcm.events after each commit ---------------------

SESSION_KEY_GONE = {"ARCHIVED"}
SESSION_KEY_GONE_WHEN_CLEAN = {"TERMINATED", "EXPIRED"}


def project_session(session_id, status: str, ports: dict | None, *, clean: bool = True) -> None:
    """Write (or remove) a session's keys; removed at ARCHIVED/TERMINATED and at EXPIRED once clean."""
    project_sessions([(session_id, status, ports, clean)])


def project_sessions(rows) -> None:
    """`project_session` for many sessions `(id, status, ports, clean)` in a few etcd transactions."""
    puts: dict[str, str] = {}
    deletes: list[str] = []
    for session_id, status, ports, clean in rows:
        keys = (session_status_key(session_id), session_ports_key(session_id))
        # A TERMINATED or EXPIRED session with teardown still to do keeps its key, so the watcher sees the put
        # and tears it down at once; its key goes when it is clean (the cleanup announces itself).
        if status in SESSION_KEY_GONE or (status in SESSION_KEY_GONE_WHEN_CLEAN and clean):
            deletes.extend(keys)
        else:
            puts[keys[0]] = status
            puts[keys[1]] = json.dumps(ports or {}, sort_keys=True)
    _write(puts, deletes)


def project_workers(rows) -> None:
    """`project_worker` for many workers `(id, desired, actual)`."""
    puts: dict[str, str] = {}
    for worker_id, desired, actual in rows:
        puts[worker_key(worker_id, "desired")] = desired
        puts[worker_key(worker_id, "actual")] = actual
    _write(puts, [])


# etcd refuses a transaction of more than 128 operations (`--max-txn-ops`): writes go in chunks.
TXN_KEYS = 64


def _write(puts: dict[str, str], deletes: list[str]) -> None:
    coord = coordinator()
    items = list(puts.items())
    for start in range(0, len(items), TXN_KEYS):
        coord.put_many_if_changed(dict(items[start : start + TXN_KEYS]))
    for start in range(0, len(deletes), TXN_KEYS):
        coord.delete_many(deletes[start : start + TXN_KEYS])
