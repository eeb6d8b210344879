"""The control loops, declared once: Celery beat (production) and the in-process runner (embedded
default) both tick exactly these.

A loop's `tick` either does its work itself (singleton loops such as placement, guarded by
a leader lease) or returns the keys needing work, found with one query; those are fanned
out as one reconcile per key (a Celery task each, or the in-process pool).
"""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import close_old_connections
from django.db.models import F
from django.utils import timezone

from lcm import metrics, reconcile
from lcm.celery import app as celery_app
from lcm.coordination import coordinator
from lcm.logging import request_id_var
from lcm.models import LoopHeartbeat

logger = logging.getLogger("lcm.loops")


@dataclass(frozen=True)
class Loop:
    """One control loop: its tick, the per-key reconciler (if it fans out) and its interval setting.

    `tick()` returns the keys needing work (fan-out loops) or does the work itself (singleton loops,
    `reconciler` None); `on_error(key, exc)` records a failed pass and returns the back-off in seconds.
    """

    name: str
    tick: Callable[[], Iterable]
    interval_setting: str
    reconciler: Callable[..., reconcile.Result] | None = None
    on_error: Callable | None = None
    description: str = ""

    @property
    def interval(self) -> float:
        return float(getattr(settings, self.interval_setting))


LOOPS: dict[str, Loop] = {}


def register(loop: Loop) -> Loop:
    """Declare a control loop; each app registers its own in `AppConfig.ready()`. Beat and the in-process
    runner tick exactly the registered loops."""
    LOOPS[loop.name] = loop
    return loop


# A pass that moved its object on asks for the next one at once (`requeue_after` 0): it runs here, in
# the same worker and under the same key lock, without a round trip through the queue; a bounded number
# in a row, so one key never holds a worker for long.
MAX_IMMEDIATE_PASSES = 8


def reconcile_key(loop_name: str, key) -> reconcile.Result:
    """Run a fan-out loop's passes for `key` (what a Celery task or the pool calls): one, and then at once
    each next one a pass asks for with `requeue_after` 0 (up to `MAX_IMMEDIATE_PASSES`)."""
    loop = LOOPS[loop_name]
    return reconcile.run(loop.name, key, loop.reconciler, loop.on_error, passes=MAX_IMMEDIATE_PASSES)


def tick(loop_name: str) -> list:
    """Run a loop's tick and record its heartbeat; returns the keys to fan out (none for self-working loops)."""
    loop = LOOPS[loop_name]
    started = time.perf_counter()
    error = ""
    keys: list = []
    try:
        result = loop.tick()
        keys = [] if loop.reconciler is None else list(result)
    except Exception as exc:
        error = f"{exc.__class__.__name__}: {exc}"[:500]
        raise
    finally:
        seconds = time.perf_counter() - started
        _heartbeat(loop_name, seconds * 1000, len(keys), error)
        metrics.observe_tick(loop_name, not error, seconds)
    return keys


def _heartbeat(loop_name: str, duration_ms: float, keys: int, error: str) -> None:
    """Record the tick for the pages and the status API; never fails the tick."""
    values = {
        "last_tick_at": timezone.now(),
        "last_duration_ms": round(duration_ms, 1),
        "last_keys": keys,
        "last_error": error,
    }
    try:
        updated = LoopHeartbeat.objects.filter(name=loop_name).update(ticks=F("ticks") + 1, **values)
        if not updated:
            LoopHeartbeat.objects.get_or_create(name=loop_name, defaults={**values, "ticks": 1})
    except Exception:  # a heartbeat is information, not work
        logger.warning("could not record the heartbeat of %s", loop_name, exc_info=True)


def loop_health() -> list[dict]:
    """One row per control loop: its interval, last tick (from the heartbeat table) and whether it is fresh.

    A loop is stale when it has not ticked for three of its intervals.
    """
    beats = {beat.name: beat for beat in LoopHeartbeat.objects.all()}
    now = timezone.now()
    return [_health_row(loop, beats.get(loop.name), now) for loop in LOOPS.values()]


def _health_row(loop: Loop, beat: LoopHeartbeat | None, now) -> dict:
    try:
        interval = loop.interval
    except (AttributeError, TypeError, ValueError):  # interval setting missing or not a number
        interval = None
    if beat is None:
        state = "no tick reported"
    elif beat.last_error:
        state = f"last tick failed: {beat.last_error}"
    elif interval and (now - beat.last_tick_at).total_seconds() > 3 * interval:
        state = "stale"
    else:
        state = "ok"
    return {
        "name": loop.name,
        "description": loop.description or loop.name,
        "interval": interval,
        "last_tick": beat.last_tick_at if beat else None,
        "last_duration_ms": beat.last_duration_ms if beat else None,
        "last_keys": beat.last_keys if beat else None,
        "state": state,
    }


def loop_gauges() -> list[metrics.Gauge]:
    """Scrape-time metrics of the loops: seconds since each loop's last tick (from the heartbeats every process
    writes), its interval, and the task queue lengths (the broker's with Redis, else the in-process pool's)."""
    beats = dict(LoopHeartbeat.objects.values_list("name", "last_tick_at"))
    now = timezone.now()
    age = metrics.Gauge(
        "lcm_loop_last_tick_age_seconds", "Seconds since the loop's last tick (stale after three intervals).", ("loop",)
    )
    interval = metrics.Gauge("lcm_loop_interval_seconds", "The loop's tick interval.", ("loop",))
    for name, loop in LOOPS.items():
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            interval.samples[(name,)] = loop.interval
        if name in beats:
            age.samples[(name,)] = max(0.0, (now - beats[name]).total_seconds())
    queues = metrics.Gauge(
        "lcm_task_queue_length",
        "Tasks waiting: in the broker by queue (Celery), or the keys queued or running in the in-process pool.",
        ("queue",),
    )
    client = _broker_redis() if settings.CELERY_BROKER_URL else None
    if client is not None:
        for queue in TASK_QUEUES:
            queues.samples[(queue,)] = client.llen(queue)
    elif not settings.CELERY_BROKER_URL:
        with _pool_lock:
            queues.samples[("inprocess",)] = len(_in_flight)
    return [age, interval, queues]


# The Celery queues (`lcm.celery`): reconcile tasks on the default one, ticks on their own.
TASK_QUEUES = ("celery", "lcm.ticks")


# --- dispatch: Celery when a broker is configured, the in-process pool otherwise ---------

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# Keys queued or running in the pool → whether another pass was asked for meanwhile.
_in_flight: dict[tuple[str, str], bool] = {}
# Delayed requeues not yet due (cancelled by `quiesce`).
_timers: set[threading.Timer] = set()
# A short requeue is honoured in-process (the ticks cover longer ones).
MAX_INPROCESS_REQUEUE_SECONDS = 30.0


def _run_in_pool(loop_name: str, key, request_id: str = "-") -> None:
    """The pool's job for one key: its passes (another one when asked for meanwhile), with the request id of
    whoever asked bound for their log lines and history rows."""
    request_id_var.set(request_id)
    entry = (loop_name, str(key))
    while True:
        result = None
        try:
            close_old_connections()
            result = reconcile_key(loop_name, key)
        finally:
            close_old_connections()
            requeue = (
                result is not None
                and result.requeue_after is not None
                and result.requeue_after <= MAX_INPROCESS_REQUEUE_SECONDS
            )
            with _pool_lock:
                again = _in_flight.get(entry, False)
                if again:
                    _in_flight[entry] = False
                else:
                    # The follow-up's timer starts while the key still counts as in flight, so
                    # `quiesce` never sees an idle pool with a requeue about to appear.
                    if requeue:
                        _start_timer(result.requeue_after, loop_name, key, locked=True)
                    _in_flight.pop(entry, None)
        if not again:
            break


def enqueue(loop_name: str, key, countdown: float | None = None) -> None:
    """Ask for one reconcile of `key` soon.

    In-process, a key already queued is not queued twice, and a key being reconciled right
    now gets one more pass when it finishes (the change that asked for it may have come
    from that very pass). With Celery: `enqueue_many` and `run_queued`.
    """
    if settings.CELERY_BROKER_URL:
        enqueue_many(loop_name, [key], countdown=countdown)
        return
    if settings.LCM_INPROCESS_WORKERS <= 0:
        return  # no in-process pool (unit tests drive the loops themselves): the next tick picks it up
    if countdown:
        _start_timer(countdown, loop_name, key)
        return
    with _pool_lock:
        submit = _claim_locked(loop_name, key)
    if submit:
        _pool.submit(_run_in_pool, loop_name, key, request_id_var.get())


def _claim_locked(loop_name: str, key) -> bool:
    """Mark `key` in flight (caller holds `_pool_lock`); True when it must be submitted to the pool."""
    global _pool
    entry = (loop_name, str(key))
    if entry in _in_flight:
        _in_flight[entry] = True
        return False
    _in_flight[entry] = False
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=settings.LCM_INPROCESS_WORKERS, thread_name_prefix="lcm-reconcile")
    return True


def _start_timer(countdown: float, loop_name: str, key, locked: bool = False) -> None:
    """A delayed `enqueue`; `locked` when the caller already holds `_pool_lock`."""

    request_id = request_id_var.get()

    def fire():
        with _pool_lock:
            if timer not in _timers:
                return  # cancelled by `quiesce`
            _timers.discard(timer)
            submit = _claim_locked(loop_name, key)
        if submit:
            _pool.submit(_run_in_pool, loop_name, key, request_id)

    timer = threading.Timer(countdown, fire)
    timer.daemon = True
    if locked:
        _timers.add(timer)
    else:
        with _pool_lock:
            _timers.add(timer)
    timer.start()


def quiesce(timeout: float = 15.0) -> bool:
    """Cancel the in-process pool's delayed requeues and wait until no pass is queued or running.

    For a clean stop (the embedded default's shutdown, a test's teardown): no reconcile may still
    hold a row lock or write a row once this returns. True when the pool went idle in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        with _pool_lock:
            for timer in _timers:
                timer.cancel()
            _timers.clear()
            idle = not _in_flight
        if idle:
            return True
        if time.monotonic() >= deadline:
            logger.warning("in-process reconciles still running after %.0f s: %s", timeout, sorted(_in_flight))
            return False
        time.sleep(0.05)


# --- the Celery work queue ---------------------------------------------------------------
#
# Ticks fan out every key needing work on every interval and the watcher adds one per change;
# without care a backlog (a burst of bookings) fills the broker with copies of the same keys,
# each of which costs a pass. As in controller-runtime's workqueue:
# - a key waits in the queue at most once: `enqueue_many` sets a marker in Redis (SET NX) and
#   publishes only the keys whose marker it set; the pass clears the marker when it starts, so a
#   change during the pass queues another one. A marker lives as long as its task may wait
#   (`TASK_EXPIRES_SECONDS`: a shorter one would expire under a backlog and let every tick queue
#   the waiting keys again, doubling the work just when there is most of it). Messages a
#   SIGKILLed worker had taken are restored by the broker only after its visibility timeout, so
#   a starting worker forgets every marker (`forget_queued`) and the next tick queues afresh
#   whatever still needs work;
# - a delayed requeue (`Result.requeue_after`, honoured up to `REQUEUE_MAX_SECONDS`; later ones
#   are the ticks' job) sets no marker, so an event meanwhile is still acted on at once;
# - one pass per key at a time is `reconcile.run`'s key lock; a key busy elsewhere comes back
#   shortly (its `requeue_after`).

REQUEUE_MAX_SECONDS = 60.0
TASK_EXPIRES_SECONDS = 300
QUEUED_TTL_SECONDS = TASK_EXPIRES_SECONDS

_redis = None
_redis_pid = None


def _broker_redis():
    """A Redis client on the broker's URL (None when the broker is not Redis); one per process."""
    global _redis, _redis_pid
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    if _redis is None or _redis_pid != os.getpid():
        _redis, _redis_pid = redis.Redis.from_url(url), os.getpid()
    return _redis


def _queued_marker(loop_name: str, key) -> str:
    return f"lcm:queued:{loop_name}:{key}"


def forget_queued() -> int:
    """Drop every queue marker (a worker starting: messages a killed one had taken may be gone); returns how many."""
    client = _broker_redis()
    if client is None:
        return 0
    try:
        names = list(client.scan_iter(match="lcm:queued:*", count=1000))
        for start in range(0, len(names), 1000):
            client.delete(*names[start : start + 1000])
        return len(names)
    except Exception as exc:  # Redis hiccup: markers expire by themselves
        logger.warning("could not forget the queue markers (%s)", exc)
        return 0


def enqueue_many(loop_name: str, keys, countdown: float | None = None) -> int:
    """Publish one reconcile task per key (not already waiting, unless delayed); returns how many."""
    keys = [str(key) for key in keys]
    client = _broker_redis() if keys and not countdown else None
    if client is not None:
        try:
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(_queued_marker(loop_name, key), "1", nx=True, ex=QUEUED_TTL_SECONDS)
                fresh = pipe.execute()
            keys = [key for key, was_set in zip(keys, fresh, strict=True) if was_set]
        except Exception as exc:  # Redis hiccup: publish anyway (a duplicate pass is safe, only wasteful)
            logger.warning("queue markers unavailable (%s); publishing without deduplication", exc)
    for key in keys:
        celery_app.send_task("lcm.reconcile", args=[loop_name, key], countdown=countdown, expires=TASK_EXPIRES_SECONDS)
    return len(keys)


def kick(loop_name: str) -> None:
    """Ask for a tick of `loop_name` soon rather than at its next interval (a new PENDING session:
    placement need not wait for beat).

    At once when no tick was kicked within the last `LCM_KICK_SPACING_SECONDS`, else one trailing
    tick at the end of that spacing (at most one waits): a burst of bookings gets a placement
    tick per spacing, each placing a batch, rather than a tick per booking, each re-reading every
    worker's capacity.
    """
    if not settings.CELERY_BROKER_URL:
        _kicked.add(loop_name)  # the in-process runner ticks it on its next turn (within 0.2 s)
        return
    spacing = max(0.05, float(settings.LCM_KICK_SPACING_SECONDS))
    countdown = None
    client = _broker_redis()
    if client is not None:
        window_ms = int(spacing * 1000)
        try:
            if not client.set(_queued_marker("kick", loop_name), "1", nx=True, px=window_ms):
                if not client.set(_queued_marker("kick-trailing", loop_name), "1", nx=True, px=window_ms):
                    return
                countdown = spacing
        except Exception as exc:  # Redis hiccup: the beat tick comes anyway
            logger.warning("cannot kick %s (%s); waiting for its tick", loop_name, exc)
            return
    celery_app.send_task(
        "lcm.tick", args=[loop_name], countdown=countdown, expires=spacing + max(1.0, LOOPS[loop_name].interval)
    )


def kick_later(loop_name: str, seconds: float) -> None:
    """One tick of `loop_name` in `seconds` (at most one waits per loop): a singleton loop whose lease another
    holder kept through an etcd outage (or died with) leads again once the lease has expired, instead of at
    its next interval. In-process coordination has no foreign holder: nothing to do."""
    if not settings.CELERY_BROKER_URL:
        return
    client = _broker_redis()
    if client is not None:
        try:
            if not client.set(_queued_marker("kick-later", loop_name), "1", nx=True, px=int(seconds * 1000)):
                return
        except Exception as exc:  # Redis hiccup: the beat tick comes anyway
            logger.warning("cannot schedule a %s tick (%s); waiting for its interval", loop_name, exc)
            return
    celery_app.send_task(
        "lcm.tick", args=[loop_name], countdown=seconds, expires=seconds + max(1.0, LOOPS[loop_name].interval)
    )


_kicked: set[str] = set()


def celery_tick(loop_name: str) -> list:
    """A tick run by a Celery worker process; returns the keys to fan out.

    Beat sends one tick per interval to whichever worker process is free, so a singleton loop's
    leader lease (placement's) must guard one tick at a time, not stay with one process: kept, it
    would turn every other process's ticks into no-ops until it expired (TTL ~15 s) — placement
    stalled for seconds with a prefork pool or several workers. It is released after the tick.
    """
    try:
        return tick(loop_name)
    finally:
        if LOOPS[loop_name].reconciler is None:
            coordinator().resign(loop_name)


def run_queued(loop_name: str, key: str) -> reconcile.Result:
    """The Celery task's body: one pass for `key`, then the follow-up it asked for."""
    client = _broker_redis()
    if client is not None:
        client.delete(_queued_marker(loop_name, key))  # from now on a new request queues a new pass
    result = reconcile_key(loop_name, key)
    if result.requeue_after is not None and result.requeue_after <= REQUEUE_MAX_SECONDS:
        enqueue_many(loop_name, [key], countdown=result.requeue_after)
    return result


class InProcessLoops:
    """Ticks every loop on its interval from one thread (the embedded default's beat + worker)."""

    def __init__(self):
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="lcm-loops")
        self.last_tick: dict[str, float] = {}

    def start(self) -> "InProcessLoops":
        self.thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop ticking, then wait for the passes already queued (see `quiesce`)."""
        self.stop_event.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=timeout)
        return quiesce(timeout)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            now = time.monotonic()
            for name, loop in LOOPS.items():
                if name in _kicked:
                    _kicked.discard(name)
                elif now - self.last_tick.get(name, 0) < loop.interval:
                    continue
                self.last_tick[name] = now
                try:
                    close_old_connections()
                    for key in tick(name):
                        enqueue(name, key)
                except Exception:
                    logger.exception("tick of %s failed", name)
                finally:
                    close_old_connections()
            self.stop_event.wait(0.2)
