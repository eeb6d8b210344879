"""The reconcile runner: every control loop is `reconcile_x(key) -> Result`, run here.

The runner isolates keys from each other (one key's exception never stops the others),
writes one structured log line per pass (loop, key, action, result, duration) and turns an
exception into a backoff recorded on the row by the loop's `on_error` hook. Reconcilers
are level-triggered: they read desired and observed state, do the next step, persist it,
and return; running one twice, or crashing between any two lines, is safe.
"""

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

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


def run(loop: str, key, reconcile: Callable, on_error: Callable | None = None) -> Result:
    """Run one reconcile pass for one key; never raises."""
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
    duration_ms = (time.perf_counter() - started) * 1000
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


def run_many(loop: str, keys: Iterable, reconcile: Callable, on_error: Callable | None = None) -> dict:
    """Run a pass for each key in turn (the in-process runner's fan-out); returns `{key: Result}`."""
    return {key: run(loop, key, reconcile, on_error) for key in keys}
