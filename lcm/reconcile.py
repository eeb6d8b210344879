"""The reconcile runner: every control loop is `reconcile_x(key) -> Result`, run here.

The runner isolates keys from each other (one key's exception never stops the others),
writes one structured log line and one metrics sample (`lcm_reconcile_passes_total`, `lcm_reconcile_duration_seconds`)
per pass (loop, key, action, result, duration) and turns an
exception into a backoff recorded on the row by the loop's `on_error` hook. Reconcilers
are level-triggered: they read desired and observed state, do the next step, persist it,
and return; running one twice, or crashing between any two lines, is safe.
"""

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection

from lcm import metrics

logger = logging.getLogger("lcm.reconcile")

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 300.0


@dataclass(frozen=True)
class Result:
    """What a pass did, and when the key wants to be looked at again (None: on the next change or tick)."""

    action: str = "noop"
    requeue_after: float | None = None
    error: str = ""

    @classmethod
    def done(cls, action: str = "noop") -> "Result":
        return cls(action=action)

    @classmethod
    def requeue(cls, after: float, action: str = "wait") -> "Result":
        return cls(action=action, requeue_after=max(0.0, float(after)))


def backoff(attempts: int, *, base: float = BACKOFF_BASE_SECONDS, cap: float = BACKOFF_MAX_SECONDS) -> timedelta:
    """Exponential backoff for the n-th consecutive failure (1-based), capped."""
    return timedelta(seconds=min(cap, base * (2 ** max(0, attempts - 1))))


@contextmanager
def key_lock(loop: str, key):
    """Hold the key for one pass: two workers never reconcile the same key at once.

    PostgreSQL: a session-level advisory lock (works across processes and machines); other
    databases (the embedded SQLite default is one process): a lock in this process.
    """
    name = f"{loop}:{key}"
    if connection.vendor == "postgresql":
        lock_id = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock_id])
            acquired = cursor.fetchone()[0]
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
        return
    with _local_locks_guard:
        lock = _local_locks.setdefault(name, threading.Lock())
    acquired = lock.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()


_local_locks: dict[str, threading.Lock] = {}
_local_locks_guard = threading.Lock()
BUSY_RETRY_SECONDS = 0.5


def run(loop: str, key, reconcile: Callable, on_error: Callable | None = None, *, passes: int = 1) -> Result:
    """Run a reconcile pass for one key; never raises. A key another worker is reconciling is skipped.

    With `passes` > 1, each pass that asks for the next one at once (`requeue_after` 0) gets it here,
    under the same key lock, up to `passes` in all; the last pass's result is returned.
    """
    with key_lock(loop, key) as acquired:
        if not acquired:
            metrics.count(metrics.RECONCILE_PASSES, loop, "busy")
            return Result.requeue(BUSY_RETRY_SECONDS, "busy elsewhere")
        for _ in range(passes):
            result = _run(loop, key, reconcile, on_error)
            if result.requeue_after != 0:
                break
        return result


def _run(loop: str, key, reconcile: Callable, on_error: Callable | None) -> Result:
    started = time.perf_counter()
    try:
        result = reconcile(key)
        if not isinstance(result, Result):
            result = Result.done(str(result or "noop"))
    except Exception as exc:  # per-key isolation: record, back off, carry on with the next key
        error = f"{exc.__class__.__name__}: {exc}"
        delay = None
        if on_error is not None:
            try:
                delay = on_error(key, exc)
            except Exception:
                logger.exception("%s: on_error for %s failed", loop, key)
        result = Result(action="error", requeue_after=delay, error=error[:500])
        logger.warning(
            "reconcile %s %s failed: %s",
            loop,
            key,
            error[:300],
            extra={"loop": loop, "key": str(key), "action": "error", "result": "error"},
        )
    seconds = time.perf_counter() - started
    duration_ms = seconds * 1000
    metrics.observe_pass(loop, _result_label(result), seconds)
    logger.info(
        "reconcile loop=%s key=%s action=%s requeue_after=%s duration_ms=%.1f",
        loop,
        key,
        result.action,
        result.requeue_after,
        duration_ms,
        extra={
            "loop": loop,
            "key": str(key),
            "action": result.action,
            "requeue_after": result.requeue_after,
            "duration_ms": round(duration_ms, 1),
        },
    )
    return result


def _result_label(result: Result) -> str:
    """The `result` label of a pass: error, requeue (asked to be looked at again) or done."""
    if result.action == "error":
        return "error"
    return "done" if result.requeue_after is None else "requeue"


def run_many(loop: str, keys: Iterable, reconcile: Callable, on_error: Callable | None = None) -> dict:
    """Run a pass for each key in turn (the in-process runner's fan-out); returns `{key: Result}`."""
    return {key: run(loop, key, reconcile, on_error) for key in keys}
