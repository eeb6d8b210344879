"""What the stateful simulators (LDS, Grading Engine) share on top of `simulators.common`: their refusal
exception, settings lookup, CloudEvents out through `EventChannel`, time-driven steps through `Wakeups`, and
the registration of API and control routes written as module-level views `view(sim, **url_args)`.
"""

import heapq
import itertools
import logging
import os
import queue
import threading
from functools import wraps

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from flask import Flask, jsonify, request

from simulators.common import Clock, Simulator, WebhookSender, add_routes, cloud_event, error_body

logger = logging.getLogger("lcm.simulators")


def setting(name: str, env: str, default: str) -> str:
    """A Django setting when Django is configured and has it (embedded default, tests); else the environment
    variable or the same local default. `python -m simulators.runner` serves the simulators without Django."""
    try:
        return getattr(settings, name)
    except (ImproperlyConfigured, AttributeError):
        return os.environ.get(env, default)


class SimError(Exception):
    """A refusal the simulated API answers with `status` and an error body."""

    def __init__(self, status: int, description: str):
        super().__init__(description)
        self.status = status
        self.description = description

    def response(self):
        """The API's answer to this refusal (a simulator's own error shape overrides it)."""
        return self.control_response()

    def control_response(self):
        """The control API's answer: the common error body."""
        return jsonify(error_body(self.status, self.description)), self.status


# -- route registration ------------------------------------------------------------------------


def register_api(sim: Simulator, app: Flask, prefix: str, routes, refuse) -> None:
    """Register the real API from `(rule, method, operation_id, view)` rows under `prefix`: faults and
    recording first (`sim.operation`), then `refuse(sim)` (an authentication answer, or None to go on), then
    `view(sim, **url_args)` under the simulator's lock; a `SimError` becomes its response."""
    for rule, method, operation_id, view in routes:
        guarded = _guarded(sim, view, refuse)
        app.add_url_rule(
            prefix + rule, endpoint=operation_id, view_func=sim.operation(operation_id)(guarded), methods=[method]
        )


def _guarded(sim: Simulator, view, refuse):
    @wraps(view)
    def guarded(*args, **kwargs):
        refusal = refuse(sim)
        if refusal is not None:
            return refusal
        try:
            with sim.lock:
                return view(sim, *args, **kwargs)
        except SimError as exc:
            return exc.response()

    return guarded


def register_control(sim: Simulator, app: Flask, routes) -> None:
    """Register a simulator's own `/_sim/...` routes from `(method, rule, view)` rows: each runs under the
    lock and a `SimError` becomes the common error body."""
    add_routes(app, sim, [(method, rule, _locked(view)) for method, rule, view in routes])


def _locked(view):
    @wraps(view)
    def locked(sim, *args, **kwargs):
        try:
            with sim.lock:
                return view(sim, *args, **kwargs)
        except SimError as exc:
            return exc.control_response()

    return locked


# -- CloudEvents -------------------------------------------------------------------------------


class EventChannel:
    """CloudEvents out of a simulator (LDS and Grading Engine): builds the structured-mode envelope, applies the
    event fault modes and delivers in order from one background thread (through `WebhookSender`, which adds
    the secret header).

    Fault modes (EXTERNAL-SYSTEMS.md §3.5, §4.7): `drop` (never sent), `duplicate` (sent twice, same id),
    `delay` (sent `delay` seconds later), `reorder` (held back and sent after the next event).
    """

    MODES = ("drop", "duplicate", "delay", "reorder")

    def __init__(self, sender: WebhookSender, source: str, prefix: str):
        self.sender = sender
        self.source = source
        self.prefix = prefix.rstrip(".")
        self.emitted: list[dict] = []
        self.dropped: list[dict] = []
        self.faults: list[dict] = []
        self._held: dict | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._deliver_forever, daemon=True, name="sim-events").start()

    def add_fault(self, spec: dict) -> dict:
        """Validate and store one event fault: {"mode", "times" (null = until cleared), "delay"}."""
        mode = spec.get("mode")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {', '.join(self.MODES)}")
        times = spec.get("times", 1)
        if times is not None and not is_positive_int(times):
            raise ValueError("times must be a positive integer or null")
        delay = spec.get("delay", 1.0)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            raise ValueError("delay must be a number of seconds")
        fault = {"mode": mode, "times": times, "delay": float(delay)}
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.emitted.clear()
            self.dropped.clear()
            self._held = None
        self.sender.sent.clear()

    def emit(self, suffix: str, subject: str, data: dict) -> dict:
        """Build `<prefix>.<suffix>` for `subject` and hand it to delivery (never blocks the caller)."""
        event = cloud_event(f"{self.prefix}.{suffix}", self.source, subject, data)
        with self._lock:
            self.emitted.append(event)
            fault = self._take_fault()
            mode = fault["mode"] if fault else None
            held, self._held = self._held, (event if mode == "reorder" else None)
        if mode == "drop":
            self.dropped.append(event)
        elif mode == "delay":
            timer = threading.Timer(fault["delay"], self._queue.put, args=(event,))
            timer.daemon = True
            timer.start()
        elif mode == "duplicate":
            self._queue.put(event)
            self._queue.put(event)
        elif mode != "reorder":
            self._queue.put(event)
        if held is not None:
            self._queue.put(held)
        return event

    def register_control_api(self, app: Flask) -> None:
        """`/_sim/webhook` (PUT {"url", "secret"}), `/_sim/events` (GET) and `/_sim/events/faults` (POST, DELETE)."""
        add_routes(app, self, EVENT_CONTROL_ROUTES)

    def _take_fault(self) -> dict | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault["times"] is not None:
            fault["times"] -= 1
            if fault["times"] <= 0:
                self.faults.pop(0)
        return fault

    def _deliver_forever(self) -> None:
        while True:
            event = self._queue.get()
            self.sender.send(event, background=False)


def sim_webhook(channel: EventChannel):
    payload = request.get_json(silent=True) or {}
    channel.sender.configure(payload.get("url"), payload.get("secret"))
    return jsonify({"url": channel.sender.url})


def sim_events(channel: EventChannel):
    return jsonify(
        {"emitted": list(channel.emitted), "sent": list(channel.sender.sent), "dropped": list(channel.dropped)}
    )


def sim_event_faults(channel: EventChannel):
    try:
        fault = channel.add_fault(request.get_json(silent=True) or {})
    except ValueError as exc:
        return jsonify(error_body(400, f"bad event fault: {exc}")), 400
    return jsonify(fault), 201


def sim_event_faults_clear(channel: EventChannel):
    channel.clear_faults()
    return jsonify({"cleared": True})


EVENT_CONTROL_ROUTES = (
    ("PUT", "/_sim/webhook", sim_webhook),
    ("GET", "/_sim/events", sim_events),
    ("POST", "/_sim/events/faults", sim_event_faults),
    ("DELETE", "/_sim/events/faults", sim_event_faults_clear),
)


def is_int(value) -> bool:
    """An integer in JSON terms (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_positive_int(value) -> bool:
    return is_int(value) and value >= 1


# -- time-driven steps -------------------------------------------------------------------------


class Wakeups:
    """One daemon thread that calls `callback(key)` once clock time `at` has come (instead of a timer thread
    per pending step). The callback re-derives what is due, so an early, late or repeated wake-up is harmless.
    """

    def __init__(self, clock: Clock, callback):
        self.clock = clock
        self.callback = callback
        self._heap: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        threading.Thread(target=self._run, daemon=True, name="sim-wakeups").start()

    def at(self, when: float, key: str) -> None:
        with self._condition:
            heapq.heappush(self._heap, (when, next(self._sequence), key))
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._heap:
                    self._condition.wait()
                when, _, key = self._heap[0]
                wait = when - self.clock.time()
                if wait > 0:
                    # Bounded, so a clock moved forward through `/_sim/clock` is noticed too.
                    self._condition.wait(timeout=min(wait, 1.0))
                    continue
                heapq.heappop(self._heap)
            try:
                self.callback(key)
            except Exception:  # a failing step must not stop every later wake-up
                logger.exception("simulator wake-up for %s failed", key)


class StatefulSimulator(Simulator):
    """A simulator of sessions whose time-driven steps are applied lazily by `_progress(session)` whenever a
    session is touched, on every `/_sim/clock` move and from a wake-up thread; it sends CloudEvents to a
    webhook (by default the local manager's, with its shared secret)."""

    sessions: dict

    def __init__(
        self,
        *,
        source: str,
        prefix: str,
        zero_delay: bool = False,
        timings: dict | None = None,
        seed: int | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        control_token: str | None = None,
    ):
        """`source`/`prefix`: the CloudEvents source and type prefix; `webhook_url`/`webhook_secret`: where
        events go (default: the settings); the rest as for every `Simulator`."""
        if webhook_url is None:
            webhook_url = setting("LCM_SIM_WEBHOOK_URL", "LCM_SIM_WEBHOOK_URL", "http://127.0.0.1:8000/api/events")
        if webhook_secret is None:
            webhook_secret = setting("WEBHOOK_SECRET", "LCM_WEBHOOK_SECRET", "local-webhook-secret")
        self.events = EventChannel(WebhookSender(webhook_url, webhook_secret), source, prefix)
        super().__init__(zero_delay=zero_delay, timings=timings, seed=seed, control_token=control_token)
        self.wakeups = Wakeups(self.clock, self._tick)
        self.reset_state()

    def _progress(self, session) -> None:
        """Apply every time-driven step of `session` that is due by now (idempotent)."""
        raise NotImplementedError

    def _tick(self, session_id: str) -> None:
        with self.lock:
            session = self.sessions.get(session_id)
            if session is not None:
                self._progress(session)

    def on_clock_advanced(self) -> None:
        with self.lock:
            for session in list(self.sessions.values()):
                self._progress(session)
