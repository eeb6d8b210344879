"""EC2, CloudWatch and S3 (evidence, SPEC §9): moto 5.2.5 in server mode, plus what moto lacks (EXTERNAL §2.3).

`MotoSimulator.app` is a WSGI app (serve it with `simulators.common.ServerThread`) that puts a thin
layer in front of moto's own server application:

- **fault injection**, by AWS operation name (the EC2 `Action`, e.g. `RunInstances`, or a
  CloudWatch operation such as `GetMetricStatistics`), with the rules of `simulators.common.Faults`
  plus an AWS error `code`: `POST /_sim/faults {"operation": "RunInstances", "code":
  "InsufficientInstanceCapacity", "times": 1}` answers the next launch with that EC2 error
  (HTTP status from `AWS_ERROR_STATUS` unless the rule gives one; `message` optional);
  `{"operation": "DescribeInstances", "delay": 5}` answers late;
- **slow state transitions** moto does not have: after `RunInstances`/`StartInstances` an instance
  stays `pending` for the `boot` timing, after `StopInstances` `stopping` for `stop`, after
  `TerminateInstances` `shutting-down` for `terminate` (seconds; all 0 with `zero_delay`, which
  leaves moto's instant transitions alone). S3 requests (path-style, signed for `s3`) are named by method
  and path (`PutObject`, `GetObject`, `HeadObject`, `DeleteObject`, `ListObjectsV2`, `CreateBucket`, ...) for
  the same fault rules (`{"operation": "PutObject", "code": "InternalError", "times": 3}`).
  `POST /_sim/timings {"boot": 30}` changes them at run time (explicit values win over `zero_delay`);
  `POST /_sim/instances/<id>/state {"state": "pending", "seconds": null}` pins an instance in a state
  (null = until an EC2 call moves it), e.g. an instance that never leaves `pending`. `/_sim/clock` moves time forward;
- **a seeded CML AMI** (`cml-2.9.0-lcm`, owned by the account, so `Owners=["self"]` finds it),
  re-seeded after every reset: `POST /_sim/reset` and moto's own `POST /moto-api/reset` both reset
  moto, the faults, the pinned states and the clock.

Transitions are settled lazily: each request first moves every instance whose deadline has passed
to its final state, so the states read by `describe_instances` (and its `instance-state-name`
filter) are moto's own. Not emulated: `initializing`/`impaired` status checks (moto reports
`ok`/`ok` for every running instance) and `monitor_instances` (moto answers 500).

moto keeps its state in module globals: one `MotoSimulator` per process (creating one resets moto).
"""

import io
import json
import os
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from flask import Flask, jsonify, request
from werkzeug.test import Client

from simulators.common import CONTROL_TOKEN_HEADER, Simulator, error_body, iso

CML_IMAGES = ({"name": "cml-2.9.0-lcm", "description": "Cisco Modeling Labs 2.9.0 worker image (LCM simulator)"},)

# HTTP status AWS answers with for each error code [AWS; the capacity ones inferred]: the status
# matters because botocore's standard retry mode retries 5xx and throttling answers.
AWS_ERROR_STATUS = {
    "InsufficientInstanceCapacity": 500,
    "InsufficientCapacity": 500,
    "InstanceLimitExceeded": 400,
    "VcpuLimitExceeded": 400,
    "RequestLimitExceeded": 503,
    "UnauthorizedOperation": 403,
    "AuthFailure": 401,
    "InvalidInstanceID.NotFound": 400,
    "InvalidAMIID.NotFound": 400,
    "IncorrectInstanceState": 400,
    "InvalidParameterValue": 400,
    "InternalError": 500,
    "Unavailable": 503,
}

# operation -> (transitional state, timing name); the final state is whatever moto set.
TRANSITIONS = {
    "RunInstances": ("pending", "boot"),
    "StartInstances": ("pending", "boot"),
    "StopInstances": ("stopping", "stop"),
    "TerminateInstances": ("shutting-down", "terminate"),
}
STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}
FINAL_STATE = {"pending": "running", "stopping": "stopped", "shutting-down": "terminated"}


@dataclass
class Transition:
    """An instance held in `state` until `until` (None: until an EC2 call moves it), then `final`."""

    instance_id: str
    state: str
    final: str
    until: float | None


class MotoSimulator(Simulator):
    """moto's server application behind the `/_sim/` control API, faults and slow transitions."""

    name = "moto"

    def __init__(
        self,
        *,
        zero_delay: bool = False,
        timings: dict | None = None,
        seed: int | None = None,
        images=CML_IMAGES,
        regions=("us-east-1",),
        control_token: str | None = None,
    ):
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.images = [dict(image) for image in images]
        self.regions = list(regions)
        self.account_id = os.environ.get("MOTO_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)
        self.transitions: dict[str, Transition] = {}
        self.timing_overrides: dict[str, float] = {}
        self.moto_app = DomainDispatcherApplication(create_backend_app)
        super().__init__(zero_delay=zero_delay, timings=timings, seed=seed, control_token=control_token)
        self._control_app = self.app.wsgi_app
        self.app.wsgi_app = self._dispatch
        with self.lock:
            self.reset_state()

    # -- Simulator hooks -----------------------------------------------------------------

    def default_timings(self) -> dict:
        return {"boot": 8.0, "stop": 5.0, "terminate": 3.0}

    def timing(self, name: str) -> float:
        if name in self.timing_overrides:
            return self.timing_overrides[name]
        return super().timing(name)

    def reset_state(self) -> None:
        """Reset moto (every service), forget pinned states and timing overrides, seed the AMIs."""
        Client(self.moto_app).post("/moto-api/reset")
        self.transitions.clear()
        self.timing_overrides.clear()
        self.seed_images()

    def control_state(self) -> dict:
        return {
            "images": self.images,
            "timings": {name: self.timing(name) for name in ("boot", "stop", "terminate")},
            "transitions": [
                {
                    "instance_id": t.instance_id,
                    "state": t.state,
                    "final": t.final,
                    "until": iso(datetime.fromtimestamp(t.until, UTC)) if t.until is not None else None,
                }
                for t in self.transitions.values()
            ],
        }

    def register_routes(self, app: Flask) -> None:
        @app.post("/_sim/timings")
        def sim_timings():
            payload = request.get_json(silent=True)
            if not isinstance(payload, dict):
                return jsonify(error_body(400, "body must be an object of timing names to seconds")), 400
            try:
                values = {str(k): float(v) for k, v in payload.items()}
            except (TypeError, ValueError):
                return jsonify(error_body(400, "timings must be numbers of seconds")), 400
            with self.lock:
                self.timing_overrides.update(values)
                return jsonify({name: self.timing(name) for name in ("boot", "stop", "terminate")})

        @app.post("/_sim/instances/<instance_id>/state")
        def sim_instance_state(instance_id):
            payload = request.get_json(silent=True) or {}
            state = payload.get("state")
            seconds = payload.get("seconds")
            if state not in STATE_CODES:
                return jsonify(error_body(400, f"state must be one of {', '.join(STATE_CODES)}")), 400
            try:
                seconds = None if seconds is None else float(seconds)
            except (TypeError, ValueError):
                return jsonify(error_body(400, "seconds must be a number or null")), 400
            with self.lock:
                instance = self._instance(instance_id)
                if instance is None:
                    return jsonify(error_body(404, f"no instance {instance_id}")), 404
                self.pin_state(instance, state, seconds)
            return jsonify({"instance_id": instance_id, "state": state, "seconds": seconds})

    # -- moto state ----------------------------------------------------------------------

    def seed_images(self) -> None:
        """Register the CML AMIs in every configured region of the account."""
        from moto.ec2.models import ec2_backends

        for region in self.regions:
            backend = ec2_backends[self.account_id][region]
            for image in self.images:
                backend.register_image(name=image["name"], description=image.get("description", ""))

    def pin_state(self, instance, state: str, seconds: float | None) -> None:
        """Put an instance in `state`; a transitional one ends after `seconds` (None: held)."""
        _set_state(instance, state)
        if state in FINAL_STATE:
            until = None if seconds is None else self.clock.time() + seconds
            self.transitions[instance.id] = Transition(instance.id, state, FINAL_STATE[state], until)
        else:
            self.transitions.pop(instance.id, None)

    def settle(self) -> None:
        """Move every instance whose transition deadline has passed to its final state."""
        now = self.clock.time()
        with self.lock:
            for transition in list(self.transitions.values()):
                if transition.until is None or transition.until > now:
                    continue
                del self.transitions[transition.instance_id]
                instance = self._instance(transition.instance_id)
                if instance is not None and instance.state == transition.state:
                    _set_state(instance, transition.final)

    def on_clock_advanced(self) -> None:
        self.settle()

    def _instance(self, instance_id: str):
        """The moto instance with this id in any account/region moto has loaded (None if unknown)."""
        from moto.ec2.models import ec2_backends

        for account in list(dict.values(ec2_backends)):
            for backend in list(dict.values(account)):
                for reservation in list(backend.reservations.values()):
                    for instance in reservation.instances:
                        if instance.id == instance_id:
                            return instance
        return None

    def _begin_transitions(self, operation: str, body: bytes) -> None:
        """After a successful state-changing call, hold its instances in the transitional state."""
        state, timing_name = TRANSITIONS[operation]
        seconds = self.timing(timing_name)
        for instance_id, previous in _changed_instances(body):
            instance = self._instance(instance_id)
            if instance is None:
                continue
            in_flight = self.transitions.get(instance_id)
            if in_flight is not None and previous == in_flight.state == state:
                # e.g. StartInstances on a booting instance: keep its original deadline
                _set_state(instance, state)
                continue
            self.transitions.pop(instance_id, None)
            if seconds > 0 and previous != instance.state:
                self.pin_state(instance, state, seconds)

    # -- the WSGI layer ------------------------------------------------------------------

    def _dispatch(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_sim/"):
            return self._control_app(environ, start_response)
        if path.startswith("/moto-api/"):
            # moto's own control API (reset, seeding, its dashboard) is behind the same token as ours.
            headers = {CONTROL_TOKEN_HEADER: environ.get("HTTP_X_SIM_TOKEN", "")}
            refusal = self.control_refusal(path, headers)
            if refusal is not None:
                status, body = refusal
                return _respond(
                    start_response, status, [("Content-Type", "application/json")], json.dumps(body).encode()
                )
        if path.rstrip("/") == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
            with self.lock:
                self.reset_state()
                self.faults.clear()
                self.recorder.clear()
                self.clock.reset()
            return _respond(start_response, 200, [("Content-Type", "application/json")], b'{"status": "ok"}')

        operation, protocol = _operation(environ)
        self.settle()
        rule = self.faults.take(operation) if operation else None
        if rule is not None:
            if rule.delay:
                time.sleep(float(rule.delay))
            code = rule.extra.get("code") or (rule.body or {}).get("code")
            if rule.status or code:
                code = code or "InternalError"
                status = int(rule.status or AWS_ERROR_STATUS.get(code, 400))
                message = rule.extra.get("message") or (rule.body or {}).get("message") or f"injected {code}"
                headers, body = _aws_error(protocol, code, message)
                self._record(operation, environ, status, fault=code)
                return _respond(start_response, status, headers, body)

        with self.lock:  # a transition must land before any other call can see moto's instant state
            status, headers, body = _call_wsgi(self.moto_app, environ)
            if operation in TRANSITIONS and status == 200:
                self._begin_transitions(operation, body)
        self._record(operation, environ, status)
        return _respond(start_response, status, headers, body)

    def _record(self, operation: str | None, environ, status: int, fault: str | None = None) -> None:
        self.recorder.record(
            {
                "operation": operation,
                "method": environ.get("REQUEST_METHOD"),
                "path": environ.get("PATH_INFO"),
                "status": status,
                "fault": fault,
                "at": self.clock.now().isoformat(),
            }
        )


def _set_state(instance, state: str) -> None:
    instance._state.name = state
    instance._state.code = STATE_CODES[state]


def _operation(environ) -> tuple[str | None, str]:
    """The AWS operation name and protocol of a request, leaving its body readable for moto."""
    if _signing_service(environ) == "s3":
        return _s3_operation(environ), "s3"
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in query:
        return query["Action"][0], "query"
    path = environ.get("PATH_INFO", "")
    if "/operation/" in path:  # smithy RPC v2 CBOR (CloudWatch with botocore >= 1.37)
        return path.rsplit("/", 1)[-1], "cbor"
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1], "json"
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        form = parse_qs(raw.decode("utf-8", "replace"))
        if "Action" in form:
            service = _signing_service(environ)
            return form["Action"][0], "ec2" if service in ("ec2", None) else "query"
    return None, "query"


def _s3_operation(environ) -> str:
    """The S3 operation of a path-style request (`/bucket` or `/bucket/key`), by method and query: the name a
    fault rule gives (`PutObject`, `GetObject`, `HeadObject`, `DeleteObject`, `ListObjectsV2`, `CreateBucket`,
    `HeadBucket`, `DeleteObjects`, ...)."""
    method = environ.get("REQUEST_METHOD", "GET")
    has_key = "/" in environ.get("PATH_INFO", "").strip("/")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if not has_key:
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        names = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}
        return names.get(method, "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects")
    return {"PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, "GetObject")


def _signing_service(environ) -> str | None:
    """The service of a SigV4 credential scope (`Credential=AK/date/region/service/aws4_request`)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        return auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")[3]
    except IndexError:
        return None


def _aws_error(protocol: str, code: str, message: str) -> tuple[list, bytes]:
    """An AWS error body in the request's protocol, which botocore parses into a ClientError."""
    request_id = str(uuid.uuid4())
    if protocol == "ec2":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
        return [("Content-Type", "text/xml")], body.encode()
    if protocol == "s3":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code><Message>{escape(message)}'
            f"</Message><RequestId>{request_id}</RequestId></Error>"
        )
        return [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)], body.encode()
    if protocol == "query":
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return [("Content-Type", "text/xml")], body.encode()
    if protocol == "cbor":
        headers = [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
        return headers + [("x-amzn-requestid", request_id)], _cbor_text_map({"__type": code, "message": message})
    body = json.dumps({"__type": code, "message": message}).encode()
    return [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-requestid", request_id)], body


def _cbor_text_map(values: dict[str, str]) -> bytes:
    """A CBOR map of text strings (RFC 8949 major types 3 and 5): enough for an error body."""

    def head(major: int, length: int) -> bytes:
        if length < 24:
            return bytes([major << 5 | length])
        if length < 0x100:
            return bytes([major << 5 | 24, length])
        if length < 0x10000:
            return bytes([major << 5 | 25]) + length.to_bytes(2, "big")
        return bytes([major << 5 | 26]) + length.to_bytes(4, "big")

    def text(value: str) -> bytes:
        data = value.encode()
        return head(3, len(data)) + data

    return head(5, len(values)) + b"".join(text(k) + text(v) for k, v in values.items())


def _changed_instances(body: bytes) -> list[tuple[str, str | None]]:
    """(instance id, previous state name or None) of each `instancesSet` item of an EC2 answer."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    changed = []
    for element in root.iter():
        if _local(element.tag) != "instancesSet":
            continue
        for item in element:
            fields = {_local(child.tag): child for child in item}
            if "instanceId" not in fields:
                continue
            previous = None
            if "previousState" in fields:
                names = [c.text for c in fields["previousState"] if _local(c.tag) == "name"]
                previous = names[0] if names else None
            changed.append((fields["instanceId"].text or "", previous))
    return changed


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _call_wsgi(app, environ) -> tuple[int, list, bytes]:
    """Run a WSGI app to completion and return (status, headers, body)."""
    captured: dict = {}
    chunks: list[bytes] = []

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(captured["status"].split(" ", 1)[0]), list(captured["headers"]), b"".join(chunks)


def _respond(start_response, status: int, headers: list, body: bytes):
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    headers.append(("Content-Length", str(len(body))))
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    start_response(f"{status} {reason}", headers)
    return [body]
