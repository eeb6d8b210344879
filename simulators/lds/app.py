"""LDS simulator: the Reservations API v3 subset (`lds-reservations-v3-subset.openapi.json`, every one of
its 25 operations) under `/reservations/v3`, with HTTP Basic auth, the session and part state machine of
EXTERNAL-SYSTEMS.md §3.3 and the CloudEvents of §3.4. One instance is one LDS deployment (region); run
several instances for several deployments.

States (names beyond the spec's examples are inferred, §3.3):

    SESSION_PENDING --launch URL fetched--> SESSION_PRELAUNCH --candidate logs in--> SESSION_RUNNING
    SESSION_RUNNING <--pause / resume--> SESSION_PAUSED
    not ended --finish, force_user_finished, refresh_status on the last part--> SESSION_USER_FINISHED
    SESSION_RUNNING --part timer expired--> SESSION_TIMEOUT
    any --release--> SESSION_FINALIZED (is_finalized, no active reservation)

Time-driven steps (auto-login N s after the launch URL was fetched, auto-finish N s after login, timer
expiry) are computed lazily from `self.clock` whenever a session is touched; one wake-up thread only makes
sure the step, and so its CloudEvent, also happens when nobody asks.

Control API, besides the common `/_sim/reset|faults|clock|requests|state`:
  POST   /_sim/sessions/<id>/login   the candidate logs in (as if the launch URL were opened)
  POST   /_sim/sessions/<id>/finish  the candidate finishes
  DELETE /_sim/sessions/<id>         the session vanishes behind the manager's back (404 afterwards)
  PUT    /_sim/catalogue             {"form_qualified_names": [...]}; null = every FQN is known (default)
  PUT    /_sim/webhook               {"url", "secret"}: where CloudEvents go
  GET    /_sim/events                CloudEvents: {"emitted": [...], "sent": [...], "dropped": [...]}
  POST   /_sim/events/faults         {"mode": "drop|duplicate|delay|reorder", "times": 1, "delay": 1.0}
  DELETE /_sim/events/faults
Launch tokens are issued already expired while a fault rule `{"operation": "launch_token",
"expire_tokens": true}` stands (no route has that operation, so the rule is never used up).
"""

import heapq
import hmac
import itertools
import logging
import os
import queue
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import wraps

import jwt
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from flask import Flask, Response, jsonify, request

from simulators.common import Clock, Simulator, WebhookSender, cloud_event, error_body, iso

logger = logging.getLogger("lcm.simulators.lds")

API = "/reservations/v3"

SESSION_PENDING = "SESSION_PENDING"
SESSION_PRELAUNCH = "SESSION_PRELAUNCH"
SESSION_RUNNING = "SESSION_RUNNING"
SESSION_PAUSED = "SESSION_PAUSED"
SESSION_USER_FINISHED = "SESSION_USER_FINISHED"
SESSION_TIMEOUT = "SESSION_TIMEOUT"
SESSION_FINALIZED = "SESSION_FINALIZED"
ENDED_STATES = {SESSION_USER_FINISHED, SESSION_TIMEOUT, SESSION_FINALIZED}

PART_PENDING = "SESSION_PART_PENDING"
PART_RUNNING = "SESSION_PART_RUNNING"
PART_PAUSED = "SESSION_PART_PAUSED"
PART_USER_FINISHED = "SESSION_PART_USER_FINISHED"
PART_TIMEOUT = "SESSION_PART_TIMEOUT"
PART_FINALIZED = "SESSION_PART_FINALIZED"

REQUIRED_SESSION_FIELDS = (
    "origin",
    "auth_id",
    "auth_id_type",
    "candidate_id",
    "location",
    "timezone_offset",
    "first_name",
    "last_name",
    "rack_group",
    "rack_number",
    "scheduled_date",
)
STRING_FIELDS = ("origin", "auth_id", "auth_id_type", "candidate_id", "location", "first_name", "last_name")
NULLABLE_STRING_FIELDS = ("password", "email_address")

# Event names per naming family (EXTERNAL-SYSTEMS.md §3.4); the family follows the configured prefix.
EVENT_TYPES = {
    "io.lablet": {
        "running": "session.running.v1",
        "paused": "session.paused.v1",
        "resumed": "session.running.v1",
        "user_finished": "session.ended.v1",
        "timeout": "session.ended.v1",
        "finalized": "session.finalized.v1",
    },
    "com.cisco": {
        "running": "session.running.v1",
        "paused": "session.paused.v1",
        "resumed": "session.restarted.v1",
        "user_finished": "session.userfinished.v1",
        "timeout": "session.ended.v1",
        "finalized": "session.finalized.v1",
    },
}


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


class EventChannel:
    """CloudEvents out of a simulator (LDS and Grading Engine): builds the structured-mode envelope, applies the
    event fault modes and delivers in order from one background thread (through `WebhookSender`, which adds
    the secret header). It belongs in simulators/common.py next to `WebhookSender`; it lives here until then.

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
        if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
            raise ValueError("times must be a positive integer or null")
        delay = spec.get("delay", 1.0)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            raise ValueError("delay must be a number of seconds")
        fault = {"mode": mode, "times": times, "delay": float(delay)}
        with self._lock:
            self.faults.append(fault)
        return fault

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

        @app.put("/_sim/webhook")
        def sim_webhook():
            payload = request.get_json(silent=True) or {}
            self.sender.configure(payload.get("url"), payload.get("secret"))
            return jsonify({"url": self.sender.url})

        @app.get("/_sim/events")
        def sim_events():
            return jsonify(
                {"emitted": list(self.emitted), "sent": list(self.sender.sent), "dropped": list(self.dropped)}
            )

        @app.post("/_sim/events/faults")
        def sim_event_faults():
            try:
                fault = self.add_fault(request.get_json(silent=True) or {})
            except ValueError as exc:
                return jsonify(error_body(400, f"bad event fault: {exc}")), 400
            return jsonify(fault), 201

        @app.delete("/_sim/events/faults")
        def sim_event_faults_clear():
            with self._lock:
                self.faults.clear()
            return jsonify({"cleared": True})

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


class Wakeups:
    """One daemon thread that calls `callback(key)` once clock time `at` has come (instead of a timer thread
    per pending step). The callback re-derives what is due, so an early, late or repeated wake-up is harmless.
    Shared with the Grading Engine simulator.
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


@dataclass
class Part:
    """One LDS session part: its content, devices, variables, state and timer (epoch seconds)."""

    repository_type: str = "svn"
    form_qualified_name: str | None = None
    track: str | None = None
    exam_version: str | None = None
    variables: dict = field(default_factory=dict)
    devices: list = field(default_factory=list)
    state: str = PART_PENDING
    timer_started_at: float | None = None
    length_seconds: float = 3600.0
    extra_seconds: float = 0.0
    responses: dict = field(default_factory=dict)

    @property
    def max_ends_at(self) -> float | None:
        if self.timer_started_at is None:
            return None
        return self.timer_started_at + self.length_seconds + self.extra_seconds

    def to_json(self) -> dict:
        out = {"repository_type": self.repository_type}
        for name in ("form_qualified_name", "track", "exam_version"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["session_part_state"] = self.state
        if self.timer_started_at is not None:
            ends = self.max_ends_at
            warning = ends - min(300.0, self.length_seconds / 10)
            out["timer"] = {
                "min_ends_at": _iso(self.timer_started_at),
                "max_ends_at": _iso(ends),
                "warning_at": _iso(warning),
                "warning_message": f"{round((ends - warning) / 60)} minutes remaining",
            }
        out["variables"] = dict(self.variables)
        return out


@dataclass
class LdsSession:
    """One LDS session (reservation) with its parts and status history."""

    id: str
    fields: dict
    created: float
    parts: list[Part]
    state: str = SESSION_PENDING
    is_finalized: bool = False
    paused_at: float | None = None
    current_part: int = 1
    launch_fetched_at: float | None = None
    logged_in_at: float | None = None
    session_statuses: list = field(default_factory=list)
    part_statuses: list = field(default_factory=list)

    @property
    def part(self) -> Part | None:
        return self.parts[self.current_part - 1] if 0 < self.current_part <= len(self.parts) else None


def _iso(epoch: float) -> str:
    return iso(datetime.fromtimestamp(epoch, UTC))


def _parse_datetime(value, name: str) -> str:
    if not isinstance(value, str):
        raise SimError(400, f"{name} must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SimError(400, f"{name} is not an ISO 8601 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return iso(parsed)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class LDSSimulator(Simulator):
    """A stateful LDS deployment: Basic-auth users, sessions, parts, devices, launch tokens and CloudEvents."""

    name = "lds"

    def __init__(
        self,
        *,
        zero_delay: bool = False,
        timings: dict | None = None,
        seed: int | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        users: dict[str, str] | None = None,
        catalogue: list[str] | None = None,
        event_prefix: str | None = None,
        event_types: dict[str, str] | None = None,
        source: str = "urn:lcm:simulators:lds",
    ):
        if users is None:
            username = setting("LCM_LDS_CLIENT_ID", "LCM_LDS_CLIENT_ID", "lcm")
            users = {username: setting("LCM_LDS_CLIENT_SECRET", "LCM_LDS_CLIENT_SECRET", "local-lds-secret")}
        self.users = dict(users)
        self.initial_catalogue = list(catalogue) if catalogue is not None else None
        self.signing_key = uuid.uuid4().hex + uuid.uuid4().hex
        prefix = event_prefix or setting("LCM_LDS_EVENT_PREFIX", "LCM_LDS_EVENT_PREFIX", "io.lablet.lds")
        family = "com.cisco" if prefix.startswith("com.cisco") else "io.lablet"
        self.event_types = EVENT_TYPES[family] | (event_types or {})
        if webhook_url is None:
            webhook_url = setting("LCM_SIM_WEBHOOK_URL", "LCM_SIM_WEBHOOK_URL", "http://127.0.0.1:8000/api/events")
        if webhook_secret is None:
            webhook_secret = setting("WEBHOOK_SECRET", "LCM_WEBHOOK_SECRET", "local-webhook-secret")
        sender = WebhookSender(webhook_url, webhook_secret)
        self.events = EventChannel(sender, source, prefix)
        self.sessions: dict[str, LdsSession] = {}
        self.catalogue: dict[str, dict] = {}
        self.open_catalogue = True
        super().__init__(zero_delay=zero_delay, timings=timings, seed=seed)
        self.wakeups = Wakeups(self.clock, self._tick)
        self.reset_state()

    def default_timings(self) -> dict:
        # Delays (`*_after`) collapse to 0 in zero-delay mode; None switches the step off. Lifetimes and
        # lengths are not delays and keep their values.
        return {
            "auto_login_after": None,
            "auto_finish_after": None,
            "launch_token_ttl": 3600,
            "session_minutes": 60,
        }

    # -- state -------------------------------------------------------------------------------

    def reset_state(self) -> None:
        with self.lock:
            self.sessions = {}
            self.open_catalogue = self.initial_catalogue is None
            self.catalogue = {}
            for fqn in self.initial_catalogue or []:
                self.catalogue[fqn] = self._lab_folder(fqn)
        self.events.reset()

    def control_state(self) -> dict:
        return {
            "sessions": {
                s.id: {
                    "state": s.state,
                    "is_finalized": s.is_finalized,
                    "parts": [{"state": p.state, "devices": len(p.devices)} for p in s.parts],
                }
                for s in self.sessions.values()
            },
            "catalogue": None if self.open_catalogue else sorted(self.catalogue),
        }

    def on_clock_advanced(self) -> None:
        with self.lock:
            for session in list(self.sessions.values()):
                self._progress(session)

    # -- routes ------------------------------------------------------------------------------

    def register_routes(self, app: Flask) -> None:
        def api(rule: str, method: str, operation_id: str):
            """Register a real API view: faults and recording (`operation`), then Basic auth, then the view."""

            def decorate(view):
                @wraps(view)
                def guarded(*args, **kwargs):
                    if not self._authorized():
                        response = jsonify(error_body(401, "valid HTTP Basic credentials are required"))
                        response.status_code = 401
                        response.headers["WWW-Authenticate"] = 'Basic realm="LDS"'
                        return response
                    try:
                        with self.lock:
                            return view(*args, **kwargs)
                    except SimError as exc:
                        return jsonify(error_body(exc.status, exc.description)), exc.status

                app.add_url_rule(
                    API + rule, endpoint=operation_id, view_func=self.operation(operation_id)(guarded), methods=[method]
                )
                return view

            return decorate

        # Content
        @api("/lab_folder/minio/<path:form_qualified_name>", "GET", "getLabFolderMinIO")
        def get_lab_folder(form_qualified_name):
            return jsonify(self._folder(form_qualified_name))

        @api("/lab_folder/minio/<path:form_qualified_name>", "PUT", "putLabFolderMinIO")
        def put_lab_folder(form_qualified_name):
            folder = self._folder(form_qualified_name)
            folder["Version"] = str(int(folder["Version"]) + 1)
            folder["DatePublished"] = iso(self.clock.now())
            return jsonify(folder)

        @api("/lab_folder/minio/<path:form_qualified_name>/validate", "GET", "getLabFolderMinIOValidate")
        def validate_lab_folder(form_qualified_name):
            folder = self._folder(form_qualified_name)
            return jsonify({"is_valid": True, "message": f"{form_qualified_name} version {folder['Version']} is valid"})

        # Sessions
        @api("/lab_session", "GET", "getLDSSessionLatestForState")
        def latest_for_state():
            state = request.args.get("state")
            if not state:
                raise SimError(400, "query parameter state is required")
            matching = [s for s in self.sessions.values() if s.state.upper() == state.upper()]
            if not matching:
                raise SimError(404, f"no LDS session in state {state}")
            latest = max(matching, key=lambda s: s.created)
            return jsonify({"latest_session_id": latest.id, "state": latest.state})

        @api("/lab_session", "POST", "postLDSSession")
        def create_session():
            body = self._json_body()
            fields = self._session_fields(body, partial=False)
            raw_parts = body.get("session_parts") or []
            if not isinstance(raw_parts, list):
                raise SimError(400, "session_parts must be an array")
            parts = [Part(**self._part_fields(p)) for p in raw_parts]
            session = LdsSession(id=str(uuid.uuid4()), fields=fields, created=self.clock.time(), parts=parts)
            self._apply_length(session)
            self.sessions[session.id] = session
            self._log_status(session, SESSION_PENDING, {n: PART_PENDING for n in range(1, len(parts) + 1)})
            location = f"{request.host_url.rstrip('/')}{API}/lab_session/{session.id}"
            return jsonify({"location": location, "session_id": session.id, "message": "Session created"})

        @api("/lab_session/<ldssession_id>", "GET", "getLDSSession")
        def get_session(ldssession_id):
            return jsonify(self._session_json(self._session(ldssession_id)))

        @api("/lab_session/<ldssession_id>", "PATCH", "patchLDSSession")
        def patch_session(ldssession_id):
            session = self._open_session(ldssession_id)
            session.fields.update(self._session_fields(self._json_body(), partial=True))
            self._apply_length(session)
            return jsonify(self._session_json(session))

        @api("/lab_session/<ldssession_id>/pause", "PUT", "putLDSSessionPause")
        def pause(ldssession_id):
            self._pause(self._open_session(ldssession_id))
            return Response(status=204)

        @api("/lab_session/<ldssession_id>/resume", "PUT", "putLDSSessionRestart")
        def resume(ldssession_id):
            self._resume(self._open_session(ldssession_id))
            return Response(status=204)

        @api("/lab_session/<ldssession_id>/release", "POST", "putLDSSessionFinalize")
        def release(ldssession_id):
            if not request.is_json:
                raise SimError(415, "release needs a JSON body (send {})")
            self._json_body(allow_null=True)
            self._release(self._session(ldssession_id))
            return Response(status=204)

        @api("/lab_session/<ldssession_id>/refresh_status", "PUT", "putLDSSessionRefreshStatus")
        def refresh_status(ldssession_id):
            session = self._open_session(ldssession_id)
            if session.current_part < len(session.parts):
                return jsonify({"result": "Not on final LDS Session Part"})
            if session.state in (SESSION_RUNNING, SESSION_PAUSED):
                self._finish(session, reason="refresh_status on the final part")
                return jsonify({"result": "LDS Session Part and LDS Session set user finished"})
            return jsonify({"result": f"LDS Session is {session.state}"})

        @api("/lab_session/<ldssession_id>/force_user_finished", "PUT", "putLDSSessionForceUserFinished")
        def force_user_finished(ldssession_id):
            session = self._open_session(ldssession_id)
            if session.state in (SESSION_USER_FINISHED, SESSION_TIMEOUT):
                raise SimError(409, f"LDS session already ended ({session.state})")
            self._finish(session, reason="force_user_finished", ended_by="admin")
            return jsonify({"result": "LDS Session Part and LDS Session set user finished"})

        @api("/lab_session/<ldssession_id>/lablet_launch_url", "GET", "getLDSSessionLabletLaunchURL")
        def launch_url(ldssession_id):
            session = self._open_session(ldssession_id)
            if session.state in ENDED_STATES:
                raise SimError(409, f"LDS session has ended ({session.state})")
            token = self._launch_token(session)
            self._launch_fetched(session)
            return jsonify({"url": f"{request.host_url}lablet/launch?token={token}"})

        @api("/lab_session/<ldssession_id>/statuses", "GET", "getLDSSessionStatuses")
        def statuses(ldssession_id):
            session = self._session(ldssession_id)
            return jsonify(
                {
                    "id": session.id,
                    "session_statuses": list(session.session_statuses),
                    "session_part_statuses": list(session.part_statuses),
                }
            )

        # Parts
        @api("/lab_session/<ldssession_id>/part/<int:part_num>", "GET", "getLDSSessionPart")
        def get_part(ldssession_id, part_num):
            return jsonify(self._part(self._session(ldssession_id), part_num).to_json())

        @api("/lab_session/<ldssession_id>/part/<int:part_num>", "POST", "postLDSSessionPart")
        def add_part(ldssession_id, part_num):
            session = self._open_session(ldssession_id)
            if part_num != len(session.parts) + 1:
                raise SimError(409, f"the next part of this session is number {len(session.parts) + 1}")
            part = Part(**self._part_fields(self._json_body()))
            session.parts.append(part)
            self._apply_length(session)
            self._log_status(session, None, {part_num: PART_PENDING})
            return jsonify(part.to_json())

        @api("/lab_session/<ldssession_id>/part/<int:part_num>", "PUT", "putLDSSessionPart")
        def update_part(ldssession_id, part_num):
            session = self._open_session(ldssession_id)
            part = self._part(session, part_num)
            body = self._json_body()
            if not isinstance(body, dict):
                raise SimError(400, "a session part must be a JSON object")
            merged = self._part_fields(
                {
                    "repository_type": part.repository_type,
                    "form_qualified_name": part.form_qualified_name,
                    "track": part.track,
                    "exam_version": part.exam_version,
                    "variables": part.variables,
                }
                | body
            )
            for name, value in merged.items():
                setattr(part, name, value)
            return jsonify(part.to_json())

        @api("/lab_session/<ldssession_id>/part/<int:part_num>", "DELETE", "deleteLDSSessionPart")
        def delete_part(ldssession_id, part_num):
            session = self._open_session(ldssession_id)
            part = self._part(session, part_num)
            if part.state != PART_PENDING:
                raise SimError(409, f"part {part_num} is {part.state}; only a pending part can be deleted")
            session.parts.remove(part)
            return Response(status=204)

        @api("/lab_session/<ldssession_id>/part/<int:part_num>/extend", "PUT", "putLDSSessionPartExtension")
        def extend_part(ldssession_id, part_num):
            self._adjust(ldssession_id, part_num, "time_extension")
            return Response(status=204)

        @api("/lab_session/<ldssession_id>/part/<int:part_num>/adjust", "PUT", "putLDSSessionPartAdjustment")
        def adjust_part(ldssession_id, part_num):
            self._adjust(ldssession_id, part_num, "time_adjustment")
            return Response(status=204)

        @api("/lab_session/<ldssession_id>/part/<int:part_num>/collect", "GET", "getLDSSessionPartResponses")
        def collect(ldssession_id, part_num):
            return jsonify({"sections": self._part(self._session(ldssession_id), part_num).responses})

        @api("/lab_session/<ldssession_id>/part/<int:part_num>/devices", "GET", "getLDSSessionPartDevice")
        def get_devices(ldssession_id, part_num):
            return jsonify(self._part(self._session(ldssession_id), part_num).devices)

        @api("/lab_session/<ldssession_id>/part/<int:part_num>/devices", "PUT", "putLDSSessionPartDevice")
        def put_devices(ldssession_id, part_num):
            part = self._part(self._open_session(ldssession_id), part_num)
            part.devices = self._devices(self._json_body())
            return jsonify(part.devices)

        @api("/lab_session/<ldssession_id>/part/<int:part_num>/variables", "GET", "getLDSSessionPartVariables")
        def get_variables(ldssession_id, part_num):
            return jsonify({"variables": self._part(self._session(ldssession_id), part_num).variables})

        @api("/lab_session/<ldssession_id>/part/<int:part_num>/variables", "PUT", "putLDSSessionPartVariables")
        def put_variables(ldssession_id, part_num):
            part = self._part(self._open_session(ldssession_id), part_num)
            body = self._json_body()
            if not isinstance(body, dict):
                raise SimError(400, "variables must be a JSON object of name/value pairs")
            part.variables.update(body)
            return jsonify({"variables": part.variables})

        # The browser-facing launch page (not part of the Reservations API, so neither recorded nor faulted).
        @app.get("/lablet/launch")
        def lablet_launch():
            try:
                # Time claims are judged against the simulator's clock below, not PyJWT's wall clock.
                claims = jwt.decode(
                    request.args.get("token", ""),
                    self.signing_key,
                    algorithms=["HS256"],
                    audience="lablet",
                    options={"verify_exp": False, "verify_iat": False},
                )
            except jwt.PyJWTError:
                return Response("<h1>Invalid launch link</h1>", status=401, mimetype="text/html")
            if claims.get("exp", 0) <= self.clock.time():
                return Response("<h1>This launch link has expired</h1>", status=401, mimetype="text/html")
            with self.lock:
                session = self.sessions.get(claims.get("sub", ""))
                if session is None:
                    return Response("<h1>Unknown session</h1>", status=404, mimetype="text/html")
                self._progress(session)
                if session.state in ENDED_STATES:
                    return Response(f"<h1>Session {session.state}</h1>", status=409, mimetype="text/html")
                self._login(session)
                devices = "".join(
                    f"<li>{d['device_label']} ({d['protocol']} {d['host']}:{d.get('port')})</li>"
                    for d in (session.part.devices if session.part else [])
                )
            return Response(f"<h1>Lablet running</h1><ul>{devices}</ul>", mimetype="text/html")

        self._register_lds_control_api(app)

    def _register_lds_control_api(self, app: Flask) -> None:
        def control(view):
            @wraps(view)
            def wrapper(*args, **kwargs):
                try:
                    with self.lock:
                        return view(*args, **kwargs)
                except SimError as exc:
                    return jsonify(error_body(exc.status, exc.description)), exc.status

            return wrapper

        @app.post("/_sim/sessions/<ldssession_id>/login")
        @control
        def sim_login(ldssession_id):
            session = self._session(ldssession_id)
            if session.state in ENDED_STATES:
                raise SimError(409, f"LDS session has ended ({session.state})")
            self._login(session)
            return jsonify(self._session_json(session))

        @app.post("/_sim/sessions/<ldssession_id>/finish")
        @control
        def sim_finish(ldssession_id):
            session = self._session(ldssession_id)
            if session.state in ENDED_STATES:
                raise SimError(409, f"LDS session has ended ({session.state})")
            self._finish(session, reason="candidate finished")
            return jsonify(self._session_json(session))

        @app.delete("/_sim/sessions/<ldssession_id>")
        @control
        def sim_vanish(ldssession_id):
            self._session(ldssession_id)
            del self.sessions[ldssession_id]
            return jsonify({"deleted": ldssession_id})

        @app.put("/_sim/catalogue")
        @control
        def sim_catalogue():
            payload = request.get_json(silent=True) or {}
            names = payload.get("form_qualified_names")
            if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise SimError(400, "form_qualified_names must be a list of strings or null")
            self.open_catalogue = names is None
            self.catalogue = {n: self.catalogue.get(n) or self._lab_folder(n) for n in names or []}
            return jsonify({"form_qualified_names": names})

        self.events.register_control_api(app)

    # -- request helpers ---------------------------------------------------------------------

    def _authorized(self) -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic" or auth.username not in self.users:
            return False
        return hmac.compare_digest(self.users[auth.username].encode(), (auth.password or "").encode())

    @staticmethod
    def _json_body(allow_null: bool = False):
        if not request.is_json:
            raise SimError(415, "the request body must be JSON (Content-Type: application/json)")
        body = request.get_json(silent=True)
        if body is None and not (allow_null and request.get_data(as_text=True).strip() == "null"):
            raise SimError(400, "the request body is not valid JSON")
        return body

    def _session(self, ldssession_id: str) -> LdsSession:
        session = self.sessions.get(ldssession_id)
        if session is None:
            raise SimError(404, f"LDS session {ldssession_id} not found")
        self._progress(session)
        return session

    def _open_session(self, ldssession_id: str) -> LdsSession:
        """A session that may still change (not finalized)."""
        session = self._session(ldssession_id)
        if session.is_finalized:
            raise SimError(409, f"LDS session {ldssession_id} is finalized")
        return session

    @staticmethod
    def _part(session: LdsSession, part_num: int) -> Part:
        if not 1 <= part_num <= len(session.parts):
            raise SimError(404, f"LDS session {session.id} has no part {part_num}")
        return session.parts[part_num - 1]

    def _session_fields(self, body, *, partial: bool) -> dict:
        if not isinstance(body, dict):
            raise SimError(400, "the LDS session must be a JSON object")
        if not partial:
            missing = [name for name in REQUIRED_SESSION_FIELDS if body.get(name) in (None, "")]
            if missing:
                raise SimError(400, f"missing required field(s): {', '.join(missing)}")
        fields = {}
        for name in STRING_FIELDS:
            if name in body:
                if not isinstance(body[name], str) or not body[name]:
                    raise SimError(400, f"{name} must be a non-empty string")
                fields[name] = body[name]
        for name in NULLABLE_STRING_FIELDS:
            if name in body:
                if body[name] is not None and not isinstance(body[name], str):
                    raise SimError(400, f"{name} must be a string or null")
                fields[name] = body[name]
        if "rack_group" in body:
            fields["rack_group"] = str(body["rack_group"])
        if "rack_number" in body:
            # Typed string, but the upstream examples send the integer 1 (§3.2): accept both, answer a string.
            if not (isinstance(body["rack_number"], str) or _is_int(body["rack_number"])):
                raise SimError(400, "rack_number must be a string")
            fields["rack_number"] = str(body["rack_number"])
        if "timezone_offset" in body:
            if not _is_int(body["timezone_offset"]):
                raise SimError(400, "timezone_offset must be an integer")
            fields["timezone_offset"] = body["timezone_offset"]
        if "scheduled_date" in body:
            fields["scheduled_date"] = _parse_datetime(body["scheduled_date"], "scheduled_date")
        if body.get("user_timeslot_end") is not None:
            fields["user_timeslot_end"] = _parse_datetime(body["user_timeslot_end"], "user_timeslot_end")
        if body.get("max_length_minutes") is not None:
            if not _is_int(body["max_length_minutes"]) or body["max_length_minutes"] < 1:
                raise SimError(400, "max_length_minutes must be a positive integer")
            fields["max_length_minutes"] = body["max_length_minutes"]
        return fields

    def _part_fields(self, body) -> dict:
        if not isinstance(body, dict):
            raise SimError(400, "a session part must be a JSON object")
        repository_type = body.get("repository_type") or "svn"
        if repository_type not in ("svn", "minio"):
            raise SimError(400, "repository_type must be svn or minio")
        fields = {"repository_type": repository_type}
        for name in ("form_qualified_name", "track", "exam_version"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise SimError(400, f"{name} must be a string")
            fields[name] = value
        if repository_type == "minio" and not fields["form_qualified_name"]:
            raise SimError(400, "a minio part needs form_qualified_name")
        svn_content = fields["track"] and fields["exam_version"]
        if repository_type == "svn" and not (fields["form_qualified_name"] or svn_content):
            raise SimError(400, "an svn part needs form_qualified_name or track and exam_version")
        if fields["form_qualified_name"] and not self._known(fields["form_qualified_name"]):
            raise SimError(404, f"unknown form_qualified_name {fields['form_qualified_name']}")
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            raise SimError(400, "variables must be an object")
        fields["variables"] = dict(variables)
        return fields

    @staticmethod
    def _devices(body) -> list[dict]:
        if not isinstance(body, list):
            raise SimError(400, "devices must be a JSON array")
        devices = []
        for index, device in enumerate(body):
            if not isinstance(device, dict):
                raise SimError(400, f"device {index} must be an object")
            for name in ("device_label", "protocol", "host"):
                if not isinstance(device.get(name), str) or not device[name]:
                    raise SimError(400, f"device {index}: {name} is required")
            port, password = device.get("port"), device.get("password")
            if port is not None and (not _is_int(port) or not 0 < port < 65536):
                raise SimError(400, f"device {index}: port must be an integer 1-65535 or null")
            if password is not None and not isinstance(password, str):
                raise SimError(400, f"device {index}: password must be a string or null")
            devices.append(
                {
                    "device_label": device["device_label"],
                    "protocol": device["protocol"],
                    "host": device["host"],
                    "port": port,
                    "password": password,
                }
            )
        return devices

    def _adjust(self, ldssession_id: str, part_num: int, key: str) -> None:
        part = self._part(self._open_session(ldssession_id), part_num)
        body = self._json_body()
        if not isinstance(body, dict) or not _is_int(body.get(key)):
            raise SimError(400, f"{key} (minutes, integer) is required")
        part.extra_seconds += body[key] * 60

    # -- content -----------------------------------------------------------------------------

    def _known(self, fqn: str) -> bool:
        return self.open_catalogue or fqn in self.catalogue

    def _folder(self, fqn: str) -> dict:
        if not self._known(fqn):
            raise SimError(404, f"no content for {fqn}")
        return self.catalogue.setdefault(fqn, self._lab_folder(fqn))

    def _lab_folder(self, fqn: str) -> dict:
        return {
            "DatePublished": iso(self.clock.now()),
            "Version": "1",
            "Publisher": "lcm-simulator",
            "Layout": "lablet",
            "FormName": fqn,
            "FormStatus": "Published",
            "FormId": fqn,
            "FormSetId": fqn,
            "ModuleId": fqn,
            "ModuleTypeName": "Lab",
            "ExamId": fqn.split("-")[0],
            "ExamVersion": "1.0",
            "TrackId": "lcm",
            "TrackShortName": "LCM",
            "TrackLongName": "Lablet Cloud Manager",
            "InstanceRegion": "local",
        }

    # -- state machine -----------------------------------------------------------------------

    def _apply_length(self, session: LdsSession) -> None:
        minutes = session.fields.get("max_length_minutes") or self.timings["session_minutes"]
        for part in session.parts:
            part.length_seconds = float(minutes) * 60

    def _session_json(self, session: LdsSession) -> dict:
        fields = {k: v for k, v in session.fields.items() if k not in ("user_timeslot_end", "max_length_minutes")}
        out = {"id": session.id} | fields
        out |= {
            "state": session.state,
            "is_finalized": session.is_finalized,
            "log_id": f"SID={session.id}",
            "active_reservation": not session.is_finalized,
            "timer_paused": session.state == SESSION_PAUSED,
            "created": _iso(session.created),
            "current_session_part": session.current_part,
            "session_parts": [part.to_json() for part in session.parts],
        }
        if session.fields.get("max_length_minutes") or session.fields.get("user_timeslot_end"):
            practice = {
                "max_length_minutes": session.fields.get("max_length_minutes") or self.timings["session_minutes"],
                "grace_period": 0,
                "user_timeslot_start": session.fields["scheduled_date"],
            }
            if session.fields.get("user_timeslot_end"):
                practice["user_timeslot_end"] = session.fields["user_timeslot_end"]
            if session.part and session.part.max_ends_at is not None:
                practice["max_ends_at"] = _iso(session.part.max_ends_at)
            out["practice_lab"] = practice
        return out

    def _log_status(self, session: LdsSession, state: str | None, part_states: dict[int, str]) -> None:
        now = int(self.clock.time())
        if state is not None:
            session.state = state
            session.session_statuses.append(
                {"new_status": state, "session_part": session.current_part, "timestamp": now}
            )
        for number, part_state in part_states.items():
            session.parts[number - 1].state = part_state
            session.part_statuses.append({"new_status": part_state, "session_part": number, "timestamp": now})

    def _emit(self, kind: str, session: LdsSession, **extra) -> None:
        data = {"aggregateId": session.id, "sessionId": session.id, "state": session.state} | extra
        self.events.emit(self.event_types[kind], session.id, data)

    def _delay(self, name: str) -> float | None:
        """A configured delay in seconds (0 in zero-delay mode), or None when the step is switched off."""
        return None if self.timings.get(name) is None else self.timing(name)

    def _schedule(self, at: float, session_id: str) -> None:
        """Wake up at clock time `at` so a due step (and its CloudEvent) happens without a caller."""
        self.wakeups.at(at, session_id)

    def _tick(self, session_id: str) -> None:
        with self.lock:
            session = self.sessions.get(session_id)
            if session is not None:
                self._progress(session)

    def _progress(self, session: LdsSession) -> None:
        """Apply every time-driven step that is due by now (idempotent)."""
        now = self.clock.time()
        login_delay = self._delay("auto_login_after")
        if (
            session.state == SESSION_PRELAUNCH
            and login_delay is not None
            and session.launch_fetched_at + login_delay <= now
        ):
            self._login(session, at=session.launch_fetched_at + login_delay)
        if session.state != SESSION_RUNNING:
            return
        due = []
        finish_delay = self._delay("auto_finish_after")
        if finish_delay is not None and session.logged_in_at + finish_delay <= now:
            due.append((session.logged_in_at + finish_delay, "finish"))
        part = session.part
        if part is not None and part.max_ends_at is not None and part.max_ends_at <= now:
            due.append((part.max_ends_at, "timeout"))
        if due:
            _, step = min(due)
            if step == "finish":
                self._finish(session, reason="auto-finish")
            else:
                self._timeout(session)

    def _launch_token(self, session: LdsSession) -> str:
        now = self.clock.time()
        expired = self.faults.flag("expire_tokens")
        ttl = float(self.timings["launch_token_ttl"])
        claims = {
            "iss": "lds-simulator",
            "aud": "lablet",
            "sub": session.id,
            "iat": int(now),
            "exp": int(now - 1) if expired else int(now + ttl),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.signing_key, algorithm="HS256")

    def _launch_fetched(self, session: LdsSession) -> None:
        if session.state != SESSION_PENDING:
            return
        session.launch_fetched_at = self.clock.time()
        self._log_status(session, SESSION_PRELAUNCH, {})
        delay = self._delay("auto_login_after")
        if delay is not None:
            self._schedule(session.launch_fetched_at + delay, session.id)

    def _login(self, session: LdsSession, at: float | None = None) -> None:
        if session.state in (SESSION_RUNNING, SESSION_PAUSED):
            return
        at = self.clock.time() if at is None else at
        session.logged_in_at = at
        part_states = {}
        if session.part is not None:
            session.part.timer_started_at = at
            part_states[session.current_part] = PART_RUNNING
            self._schedule(session.part.max_ends_at, session.id)
        self._log_status(session, SESSION_RUNNING, part_states)
        self._emit("running", session)
        delay = self._delay("auto_finish_after")
        if delay is not None:
            self._schedule(at + delay, session.id)

    def _finish(self, session: LdsSession, *, reason: str, ended_by: str = "user") -> None:
        part_states = {n: PART_USER_FINISHED for n, p in enumerate(session.parts, 1) if p.state != PART_TIMEOUT}
        self._log_status(session, SESSION_USER_FINISHED, part_states)
        self._emit("user_finished", session, reason=reason, endedBy=ended_by)

    def _timeout(self, session: LdsSession) -> None:
        self._log_status(session, SESSION_TIMEOUT, {session.current_part: PART_TIMEOUT})
        self._emit("timeout", session, reason="the part timer expired", endedBy="timeout")

    def _pause(self, session: LdsSession) -> None:
        if session.state != SESSION_RUNNING:
            raise SimError(409, f"only a running session can be paused (it is {session.state})")
        session.paused_at = self.clock.time()
        self._log_status(session, SESSION_PAUSED, {session.current_part: PART_PAUSED})
        self._emit("paused", session, reason="paused by the manager")

    def _resume(self, session: LdsSession) -> None:
        if session.state != SESSION_PAUSED:
            raise SimError(409, f"only a paused session can be resumed (it is {session.state})")
        # The part timer does not run while paused.
        if session.part is not None and session.paused_at is not None:
            session.part.extra_seconds += self.clock.time() - session.paused_at
            self._schedule(session.part.max_ends_at, session.id)
        session.paused_at = None
        self._log_status(session, SESSION_RUNNING, {session.current_part: PART_RUNNING})
        self._emit("resumed", session, reason="resumed by the manager")

    def _release(self, session: LdsSession) -> None:
        if session.is_finalized:
            return
        session.is_finalized = True
        self._log_status(session, SESSION_FINALIZED, {n: PART_FINALIZED for n in range(1, len(session.parts) + 1)})
        self._emit("finalized", session, reason="released", endedBy="admin")
