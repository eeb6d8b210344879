"""What every simulator shares: a virtual clock, fault injection, request recording, the `/_sim/`
control API, CloudEvents delivery and a threaded HTTP server for in-process use.

Faults are declared per operation (the OpenAPI operationId or a simulator's own name):
`{"operation": "start_lab", "status": 503, "times": 2}` answers the next two calls with 503;
`{"operation": "*", "status": 500, "probability": 0.1}` fails 10 % of every call;
`{"operation": "get_lab", "delay": 5}` sleeps before answering (a timeout for a short client);
`{"operation": "authenticate", "expire_tokens": true}` makes every issued token expired.

The control API answers only requests carrying the simulator's control token (`X-Sim-Token`, SPEC §12) when
it has one: every entry point that serves simulators (`start_simulators`: the embedded default, the launcher,
`manage.py lcm_simulators`) gives them one (`LCM_SIM_TOKEN`, else a generated one); only a test that builds
a simulator object itself may leave it open. `/_sim/health` tells nothing and stays open (readiness probes).
"""

import contextlib
import hmac
import io
import json
import logging
import random
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import wraps

import requests
from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

logger = logging.getLogger("lcm.simulators")

CONTROL_TOKEN_HEADER = "X-Sim-Token"
SENSITIVE_HEADERS = {"authorization", "cookie", "x-api-key", "x-lcm-webhook-secret", CONTROL_TOKEN_HEADER.lower()}
# Served without the control token: the readiness probe.
OPEN_CONTROL_PATHS = {"/_sim/health"}


class Clock:
    """Real time plus an offset that tests move forward with `/_sim/clock`."""

    def __init__(self):
        self.offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        return time.time() + self.offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += float(seconds)

    def reset(self) -> None:
        self.offset = 0.0


@dataclass
class FaultRule:
    """One injected failure; `times=None` means until removed."""

    operation: str = "*"
    status: int | None = None
    delay: float = 0.0
    times: int | None = 1
    probability: float = 1.0
    body: dict | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "FaultRule":
        known = {"operation", "status", "delay", "times", "probability", "body"}
        rule = cls(**{k: v for k, v in data.items() if k in known})
        rule.extra = {k: v for k, v in data.items() if k not in known}
        if rule.status is not None and not 100 <= int(rule.status) <= 599:
            raise ValueError("status must be an HTTP status")
        if not 0 <= float(rule.probability) <= 1:
            raise ValueError("probability must be within 0..1")
        return rule


class Faults:
    """Scripted or probabilistic failures per operation."""

    def __init__(self, seed: int | None = None):
        self.rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def take(self, operation: str) -> FaultRule | None:
        """The rule that fires for this call, if any (consuming one of its `times`)."""
        with self._lock:
            for rule in list(self.rules):
                if rule.operation not in ("*", operation):
                    continue
                if rule.probability < 1 and self._random.random() >= rule.probability:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
                return rule
        return None

    def flag(self, name: str) -> bool:
        """Whether a standing rule sets a named behaviour flag (e.g. `expire_tokens`)."""
        with self._lock:
            return any(rule.extra.get(name) for rule in self.rules)


class Recorder:
    """Every request a simulator served, with its response, for contract tests."""

    def __init__(self, limit: int = 10_000):
        self.limit = limit
        self.items: list[dict] = []
        self._lock = threading.Lock()

    def record(self, entry: dict) -> None:
        with self._lock:
            self.items.append(entry)
            if len(self.items) > self.limit:
                del self.items[: len(self.items) - self.limit]

    def clear(self) -> None:
        with self._lock:
            self.items.clear()

    def list(self) -> list[dict]:
        with self._lock:
            return list(self.items)


def error_body(status: int, description: str) -> dict:
    return {"code": status, "description": description}


class Simulator:
    """Base of a simulator: state lives on the instance; `app` is its Flask application."""

    name = "simulator"

    def __init__(
        self,
        *,
        zero_delay: bool = False,
        timings: dict | None = None,
        seed: int | None = None,
        control_token: str | None = None,
    ):
        """`control_token`: what the control API (`/_sim/...`) demands in `X-Sim-Token`; None leaves it open
        (tests that build a simulator themselves only: `start_simulators` always sets one)."""
        self.control_token = control_token or None
        self.clock = Clock()
        self.faults = Faults(seed)
        self.recorder = Recorder()
        self.zero_delay = zero_delay
        self.timings = dict(self.default_timings()) | (timings or {})
        self.lock = threading.RLock()
        self.app = Flask(f"lcm-sim-{self.name}")
        self.app.json.sort_keys = False
        self._register_control_api()
        self.register_routes(self.app)

    # -- to override ---------------------------------------------------------------------

    def default_timings(self) -> dict:
        return {}

    def register_routes(self, app: Flask) -> None:
        raise NotImplementedError

    def reset_state(self) -> None:
        """Forget every resource (called by `/_sim/reset`)."""

    def control_state(self) -> dict:
        """A summary of the simulator's resources for `/_sim/state`."""
        return {}

    # -- timing --------------------------------------------------------------------------

    def timing(self, name: str) -> float:
        return 0.0 if self.zero_delay else float(self.timings.get(name, 0.0))

    # -- control API ---------------------------------------------------------------------

    def _register_control_api(self):
        add_routes(self.app, self, CONTROL_ROUTES)
        self.app.before_request(self._refuse_control_without_token)

    def control_refusal(self, path: str, headers) -> tuple[int, dict] | None:
        """The answer to a control request (`path` under `/_sim/`) without the right token, or None to serve it."""
        if self.control_token is None or path in OPEN_CONTROL_PATHS:
            return None
        supplied = headers.get(CONTROL_TOKEN_HEADER) or ""
        if hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"), self.control_token.encode()):
            return None
        return 401, error_body(
            401, f"the simulator control API needs the {CONTROL_TOKEN_HEADER} header (LCM_SIM_TOKEN)"
        )

    def _refuse_control_without_token(self):
        if not request.path.startswith("/_sim/"):
            return None
        refusal = self.control_refusal(request.path, request.headers)
        if refusal is None:
            return None
        status, body = refusal
        return jsonify(body), status

    def on_clock_advanced(self) -> None:
        """Hook: progress time-driven state after the clock moved."""

    # -- operations ----------------------------------------------------------------------

    def operation(self, operation_id: str):
        """Decorator for a real API view: records the call and applies injected faults first."""

        def decorate(view):
            @wraps(view)
            def wrapper(*args, **kwargs):
                rule = self.faults.take(operation_id)
                response = None
                if rule is not None:
                    if rule.delay:
                        time.sleep(float(rule.delay))
                    if rule.status:
                        body = rule.body or error_body(int(rule.status), f"injected fault for {operation_id}")
                        response = Response(json.dumps(body), status=int(rule.status), mimetype="application/json")
                if response is None:
                    result = view(*args, **kwargs)
                    response = self.app.make_response(result)
                self._record(operation_id, response)
                return response

            return wrapper

        return decorate

    def _record(self, operation_id: str, response: Response) -> None:
        body = request.get_data(as_text=True)
        try:
            response_body = response.get_json(silent=True) if response.is_json else response.get_data(as_text=True)
        except Exception:  # a streamed or binary body is recorded as absent
            response_body = None
        self.recorder.record(
            {
                "operation": operation_id,
                "method": request.method,
                "path": request.path,
                "query": request.query_string.decode(),
                "headers": {k: _redacted(k, v) for k, v in request.headers.items()},
                "content_type": request.content_type,
                "body": body[:100_000],
                "status": response.status_code,
                "response_content_type": response.content_type,
                "response": response_body,
                "at": self.clock.now().isoformat(),
            }
        )


def add_routes(app: Flask, target, routes) -> None:
    """Register module-level views from `(method, rule, view)` rows; each is called as `view(target, **url_args)`
    and keeps its own name as the endpoint."""
    for method, rule, view in routes:
        app.add_url_rule(rule, endpoint=view.__name__, view_func=bind(view, target), methods=[method])


def bind(view, target):
    """`view` as a Flask view of the URL arguments alone, called as `view(target, **url_args)`."""

    @wraps(view)
    def bound(*args, **kwargs):
        return view(target, *args, **kwargs)

    return bound


# -- the common control API (`/_sim/...`) ------------------------------------------------------


def sim_reset(sim: Simulator):
    with sim.lock:
        sim.reset_state()
        sim.faults.clear()
        sim.recorder.clear()
        sim.clock.reset()
    return jsonify({"reset": True})


def sim_faults_list(sim: Simulator):
    return jsonify([asdict(rule) for rule in sim.faults.rules])


def sim_faults_add(sim: Simulator):
    payload = request.get_json(silent=True)
    rules = payload if isinstance(payload, list) else [payload]
    try:
        added = [sim.faults.add(FaultRule.from_json(r)) for r in rules if isinstance(r, dict)]
    except (TypeError, ValueError) as exc:
        return jsonify(error_body(400, f"bad fault rule: {exc}")), 400
    if not added:
        return jsonify(error_body(400, "body must be a fault rule object or a list of them")), 400
    return jsonify([asdict(rule) for rule in added]), 201


def sim_faults_clear(sim: Simulator):
    sim.faults.clear()
    return jsonify({"cleared": True})


def sim_clock(sim: Simulator):
    payload = request.get_json(silent=True) or {}
    try:
        sim.clock.advance(float(payload.get("advance", 0)))
    except (TypeError, ValueError):
        return jsonify(error_body(400, "advance must be a number of seconds")), 400
    sim.on_clock_advanced()
    return jsonify({"now": sim.clock.now().isoformat(), "offset": sim.clock.offset})


def sim_requests(sim: Simulator):
    return jsonify(sim.recorder.list())


def sim_requests_clear(sim: Simulator):
    sim.recorder.clear()
    return jsonify({"cleared": True})


def sim_state(sim: Simulator):
    with sim.lock:
        return jsonify(sim.control_state())


def sim_health(sim: Simulator):
    return jsonify({"simulator": sim.name, "ok": True})


CONTROL_ROUTES = (
    ("POST", "/_sim/reset", sim_reset),
    ("GET", "/_sim/faults", sim_faults_list),
    ("POST", "/_sim/faults", sim_faults_add),
    ("DELETE", "/_sim/faults", sim_faults_clear),
    ("POST", "/_sim/clock", sim_clock),
    ("GET", "/_sim/requests", sim_requests),
    ("DELETE", "/_sim/requests", sim_requests_clear),
    ("GET", "/_sim/state", sim_state),
    ("GET", "/_sim/health", sim_health),
)


def _redacted(name: str, value: str) -> str:
    """A header value safe to record: secrets are masked, but an Authorization header keeps its scheme word
    (`Basic`, `Bearer`) so contract checks can still see that the call was authenticated."""
    if name.lower() not in SENSITIVE_HEADERS:
        return value
    if name.lower() == "authorization" and " " in value:
        return value.split(" ", 1)[0] + " <redacted>"
    return "<redacted>"


def cloud_event(event_type: str, source: str, subject: str, data: dict) -> dict:
    """A CloudEvents 1.0 envelope in structured mode."""
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "type": event_type,
        "source": source,
        "subject": subject,
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }


class WebhookSender:
    """Delivers CloudEvents to the configured webhook URL in the background, with a few retries."""

    def __init__(self, url: str | None = None, secret: str | None = None, header: str = "X-LCM-Webhook-Secret"):
        self.url = url
        self.secret = secret
        self.header = header
        self.sent: list[dict] = []

    def configure(self, url: str | None, secret: str | None) -> None:
        self.url, self.secret = url, secret

    def send(self, event: dict, *, background: bool = True) -> None:
        self.sent.append(event)
        if not self.url:
            return
        if background:
            threading.Thread(target=self._deliver, args=(event,), daemon=True).start()
        else:
            self._deliver(event)

    def _deliver(self, event: dict) -> None:
        headers = {"Content-Type": "application/cloudevents+json"}
        if self.secret:
            headers[self.header] = self.secret
        for attempt in range(4):
            try:
                response = requests.post(self.url, data=json.dumps(event), headers=headers, timeout=(2, 5))
                if response.status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2 * (2**attempt))
        logger.warning("webhook delivery of %s to %s failed", event.get("type"), self.url)


class _NothingLeft:
    def read(self, size: int = -1) -> bytes:
        return b""


class KeepAliveHandler(WSGIRequestHandler):
    """werkzeug's request handler, keeping HTTP/1.1 connections open as the real systems' servers do.

    werkzeug closes every connection because `http.server` cannot skip a request body the app left
    unread before reading the next request line; this handler reads a `Content-Length` body before
    the app runs, so it can keep the connection (a chunked request body still closes it). A
    connection idle for `timeout` seconds is closed.
    """

    protocol_version = "HTTP/1.1"
    timeout = 30

    def setup(self):
        super().setup()
        # The status line and headers, then the body, go out as separate writes: with Nagle's algorithm
        # on a kept-alive connection the body would wait for the client's delayed ACK (~40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self):
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        super().finish()

    def run_wsgi(self):
        stream = self.rfile
        try:
            super().run_wsgi()
        finally:
            self.rfile = stream

    def make_environ(self):
        environ = super().make_environ()
        self.keep_alive = environ.get("HTTP_TRANSFER_ENCODING", "").lower() != "chunked"
        if self.keep_alive:
            length = environ.get("CONTENT_LENGTH") or "0"
            body = self.rfile.read(int(length)) if length.isdigit() else b""
            environ["wsgi.input"] = io.BytesIO(body)
            # werkzeug discards whatever is left to read after the response: here that is the next request.
            self.rfile = _NothingLeft()
        return environ

    def log_error(self, format, *args):
        # An idle kept-alive connection reaching `timeout` is how it ends, not an error: http.server reports it
        # as "Request timed out"; that goes to DEBUG, every other error stays an ERROR line.
        if format.startswith("Request timed out"):
            logging.getLogger("werkzeug").debug("idle connection closed: " + format, *args)
            return
        super().log_error(format, *args)

    def send_header(self, keyword, value):
        closing = keyword.lower() == "connection" and value.lower() == "close"
        if closing and getattr(self, "keep_alive", False) and not self.close_connection:
            return  # werkzeug's unconditional close; a client's own `Connection: close` is still honoured
        super().send_header(keyword, value)


class ServerThread:
    """Serves a WSGI app on host:port from a daemon thread (port 0 picks a free one)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        # Bind here first: werkzeug's own bind prints and calls sys.exit on a port in use; this raises OSError.
        with socket.create_server((host, port)) as listening:
            self.server = make_server(
                host, port, app, threaded=True, fd=listening.fileno(), request_handler=KeepAliveHandler
            )
        self.server.open_connections = set()
        self.server.connections_lock = threading.Lock()
        self.host = host
        self.port = self.server.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name=f"sim-{self.port}")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, closing the kept-alive connections too (their threads would go on serving)."""
        self.server.shutdown()
        self.server.server_close()
        with self.server.connections_lock:
            connections = list(self.server.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def in_seconds(clock: Clock, seconds: float) -> datetime:
    return clock.now() + timedelta(seconds=seconds)
