"""Grading Engine simulator: the API v1 of `grading-engine-openapi.json` (all 15 operations) under
`/api/v1`, a Keycloak-style client-credentials token endpoint, asynchronous grading and the CloudEvents of
EXTERNAL-SYSTEMS.md §4.6.

Authentication: `POST /realms/<realm>/protocol/openid-connect/token` (form `grant_type=client_credentials`,
`client_id`, `client_secret`, `scope`; or the client as HTTP Basic) issues a signed JWT (HS256, `exp` after
`token_ttl` seconds of `self.clock`). The API answers `401` (no body) to a missing, expired or revoked token
and `403` (no body) to a token without the `api` scope.

Part lifecycle (inferred vocabulary, §4.4): created --grade--> grading --(after `grading_delay`)--> reviewing
(score report) or faulted (`statusReason`); reviewing --submit--> locked. A locked part refuses re-grading.
Grading finishes lazily from `self.clock` whenever the session is touched, and a wake-up thread makes it
finish (and emit its CloudEvent) also when nobody asks.

The outcome of a grading job is, in order: a scripted outcome (`/_sim/grading/outcomes`), else a score of
`score` (fixed) or a seeded-random score. Scores fill the fixture ruleset's items in order.

Control API, besides the common `/_sim/reset|faults|clock|requests|state`:
  POST   /_sim/grading/<session id>/complete  {"score"?, "part_id"?}: finish grading now with a score report
  POST   /_sim/grading/<session id>/fail      {"reason"?, "part_id"?}: finish grading now as faulted
  POST   /_sim/grading/outcomes               {"outcome": "complete|fail|hang", "score"?, "reason"?,
                                               "session_id"?, "part_id"?, "times"?: 1 (null = until cleared)}
  DELETE /_sim/grading/outcomes
  POST   /_sim/tokens/revoke                  every issued token is refused from now on (401 mid-flow)
  PUT    /_sim/webhook, GET /_sim/events, POST|DELETE /_sim/events/faults  (common_stateful.EventChannel)
Tokens are issued already expired while a fault rule `{"operation": "tokens", "expire_tokens": true}` stands.
"""

import base64
import copy
import hashlib
import hmac
import html
import json
import random
import uuid
from functools import wraps

import jwt
import yaml
from flask import Flask, Response, jsonify, request

from simulators.common import Simulator, WebhookSender, error_body, iso
from simulators.common_stateful import EventChannel, Wakeups, setting

API = "/api/v1"
AUDIENCE = "grading-engine"
JSON_TYPES = {"application/json", "text/json"}
YAML_TYPES = {"application/yaml", "application/x-yaml"}

CREATED, GRADING, REVIEWING, LOCKED, FAULTED = "created", "grading", "reviewing", "locked", "faulted"

SESSION_COMMAND_FIELDS = {"id", "candidateId", "lds", "parts"}
PART_COMMAND_FIELDS = {"id", "pod"}
POD_FIELDS = {"id", "devices"}
DEVICE_FIELDS = {"label", "hostname", "collector", "interfaces"}
INTERFACE_FIELDS = {"name", "protocol", "host", "port", "authentication", "configuration"}
SCORING_FIELDS = {"version", "rereadScore", "cutScore", "minScore"}
INT32 = (-(2**31), 2**31 - 1)

DEFAULT_RULESET = {
    "checksum": "sim-ruleset-1",
    "lab": {"title": "Simulated lab", "version": "1.0"},
    "sections": [
        {
            "index": 1,
            "mode": "auto",
            "description": "Device access",
            "domain": "Operations",
            "points": 60,
            "items": [
                {
                    "id": "1.1",
                    "index": 1,
                    "description": "Console reachable",
                    "domain": "Operations",
                    "fieldTest": False,
                    "points": 30,
                    "webItemType": "lab",
                    "rules": [{"command": "show version", "match": "uptime", "points": 30}],
                },
                {
                    "id": "1.2",
                    "index": 2,
                    "description": "Hostname configured",
                    "domain": "Operations",
                    "fieldTest": False,
                    "points": 30,
                    "webItemType": "lab",
                    "rules": [{"command": "show running-config | include hostname", "match": "hostname", "points": 30}],
                },
            ],
        },
        {
            "index": 2,
            "mode": "auto",
            "description": "Connectivity",
            "domain": "Networking",
            "points": 40,
            "items": [
                {
                    "id": "2.1",
                    "index": 1,
                    "description": "Peers reachable",
                    "domain": "Networking",
                    "fieldTest": False,
                    "points": 40,
                    "webItemType": "lab",
                    "rules": [{"command": "ping 10.0.0.2", "match": "!!!!!", "points": 40}],
                }
            ],
        },
    ],
}
DEFAULT_SCORING = {"version": 1, "rereadScore": 60, "cutScore": 70, "minScore": 0}


class Problem(Exception):
    """A refusal answered as RFC 7807 ProblemDetails (`errors` maps a field to its messages)."""

    def __init__(self, status: int, title: str, detail: str | None = None, errors: dict | None = None):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors

    def response(self) -> Response:
        body = {
            "type": f"https://tools.ietf.org/html/rfc9110#section-15.{5 if self.status < 500 else 6}",
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if self.errors:
            body["errors"] = self.errors
        response = jsonify(body)
        response.status_code = self.status
        return response


class Validation:
    """Collects field errors in the ProblemDetails `errors` shape; a 422 when any."""

    def __init__(self):
        self.errors: dict[str, list[str]] = {}

    def add(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)

    def object(self, value, path: str, allowed: set[str]) -> bool:
        if not isinstance(value, dict):
            self.add(path, "must be an object")
            return False
        for key in sorted(set(value) - allowed):
            self.add(f"{path}.{key}", "unknown field")
        return True

    def string(self, value: dict, key: str, path: str, *, required: bool = False, min_length: int = 0) -> None:
        if key not in value or value[key] is None:
            if required:
                self.add(f"{path}.{key}", "is required")
            return
        if not isinstance(value[key], str):
            self.add(f"{path}.{key}", "must be a string")
        elif len(value[key]) < min_length:
            self.add(f"{path}.{key}", f"must be at least {min_length} characters long")

    def integer(self, value: dict, key: str, path: str, *, required: bool = False) -> None:
        if key not in value:
            if required:
                self.add(f"{path}.{key}", "is required")
            return
        number = value[key]
        if not isinstance(number, int) or isinstance(number, bool) or not INT32[0] <= number <= INT32[1]:
            self.add(f"{path}.{key}", "must be a 32-bit integer")

    def pod(self, pod, path: str) -> None:
        if not self.object(pod, path, POD_FIELDS):
            return
        if "id" not in pod:
            self.add(f"{path}.id", "is required")
        self.string(pod, "id", path)
        devices = pod.get("devices")
        if devices is None:
            return
        if not isinstance(devices, list):
            self.add(f"{path}.devices", "must be an array")
            return
        for index, device in enumerate(devices):
            self.device(device, f"{path}.devices[{index}]")

    def device(self, device, path: str) -> None:
        if not self.object(device, path, DEVICE_FIELDS):
            return
        for key in ("label", "hostname", "collector"):
            self.string(device, key, path, required=True, min_length=1)
        interfaces = device.get("interfaces")
        if not isinstance(interfaces, list) or not interfaces:
            self.add(f"{path}.interfaces", "at least one interface is required")
            return
        for index, interface in enumerate(interfaces):
            where = f"{path}.interfaces[{index}]"
            if not self.object(interface, where, INTERFACE_FIELDS):
                continue
            for key in ("name", "protocol", "host"):
                self.string(interface, key, where, required=True, min_length=1)
            self.integer(interface, "port", where)
            authentication = interface.get("authentication")
            if authentication is not None and self.object(
                authentication, f"{where}.authentication", {"scheme", "properties"}
            ):
                self.string(authentication, "scheme", f"{where}.authentication", required=True, min_length=1)
                properties = authentication.get("properties")
                if properties is not None and not (
                    isinstance(properties, dict) and all(isinstance(v, str) for v in properties.values())
                ):
                    self.add(f"{where}.authentication.properties", "must map names to strings")
            configuration = interface.get("configuration")
            if configuration is not None and not isinstance(configuration, dict):
                self.add(f"{where}.configuration", "must be an object")

    def part(self, part, path: str) -> None:
        if not self.object(part, path, PART_COMMAND_FIELDS):
            return
        self.string(part, "id", path, required=True, min_length=3)
        if "pod" in part:
            self.pod(part["pod"], f"{path}.pod")

    def raise_if_any(self) -> None:
        if self.errors:
            raise Problem(422, "One or more validation errors occurred.", errors=self.errors)


class GradingSimulator(Simulator):
    """A stateful Grading Engine: OAuth2 clients and tokens, sessions, parts, pods and grading jobs."""

    name = "grading"

    def __init__(
        self,
        *,
        zero_delay: bool = False,
        timings: dict | None = None,
        seed: int | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        clients: dict[str, str | dict] | None = None,
        realm: str | None = None,
        score: int | None = None,
        ruleset: dict | None = None,
        scoring: dict | None = None,
        event_prefix: str | None = None,
        event_types: dict[str, str] | None = None,
        source: str = "urn:lcm:simulators:grading",
    ):
        """`clients`: client id -> secret (scope `api`) or {"secret", "scopes": [...]}; `score`: a fixed score
        for every grading job (None = seeded random); `ruleset`/`scoring`: the fixture every part gets."""
        if clients is None:
            client_id = setting("LCM_GRADING_CLIENT_ID", "LCM_GRADING_CLIENT_ID", "lcm")
            clients = {
                client_id: setting("LCM_GRADING_CLIENT_SECRET", "LCM_GRADING_CLIENT_SECRET", "local-grading-secret")
            }
        self.clients = {
            cid: {"secret": c, "scopes": ["api"]} if isinstance(c, str) else {"scopes": ["api"]} | c
            for cid, c in clients.items()
        }
        self.realm = realm or setting("LCM_GRADING_REALM", "LCM_GRADING_REALM", "lcm")
        self.fixed_score = score
        self.seed = seed
        self.ruleset_fixture = copy.deepcopy(ruleset or DEFAULT_RULESET)
        self.scoring_fixture = dict(scoring or DEFAULT_SCORING)
        self.signing_key = uuid.uuid4().hex + uuid.uuid4().hex
        prefix = event_prefix or setting("LCM_GRADING_EVENT_PREFIX", "LCM_GRADING_EVENT_PREFIX", "io.lablet.grading")
        self.event_types = {"completed": "session.completed", "failed": "session.failed"} | (event_types or {})
        if webhook_url is None:
            webhook_url = setting("LCM_SIM_WEBHOOK_URL", "LCM_SIM_WEBHOOK_URL", "http://127.0.0.1:8000/api/events")
        if webhook_secret is None:
            webhook_secret = setting("WEBHOOK_SECRET", "LCM_WEBHOOK_SECRET", "local-webhook-secret")
        self.events = EventChannel(WebhookSender(webhook_url, webhook_secret), source, prefix)
        self.sessions: dict[str, dict] = {}
        self.jobs: dict[tuple[str, str], dict] = {}
        self.outcomes: list[dict] = []
        self.toolkits: dict[str, dict] = {}
        self.active_tokens: set[str] = set()
        self.random = random.Random(seed)
        super().__init__(zero_delay=zero_delay, timings=timings, seed=seed)
        self.wakeups = Wakeups(self.clock, self._tick)
        self.reset_state()

    def default_timings(self) -> dict:
        # `grading_delay` is a delay (0 in zero-delay mode); `token_ttl` is a lifetime and keeps its value.
        return {"grading_delay": 3.0, "token_ttl": 300}

    # -- state -------------------------------------------------------------------------------

    def reset_state(self) -> None:
        with self.lock:
            self.sessions = {}
            self.jobs = {}
            self.outcomes = []
            self.toolkits = {}
            self.active_tokens = set()
            self.random = random.Random(self.seed)
        self.events.reset()

    def control_state(self) -> dict:
        return {
            "sessions": {
                sid: {"status": s["status"], "parts": {p["id"]: p["status"] for p in s["parts"]}}
                for sid, s in self.sessions.items()
            },
            "outcomes": list(self.outcomes),
            "active_tokens": len(self.active_tokens),
        }

    def on_clock_advanced(self) -> None:
        with self.lock:
            for session in list(self.sessions.values()):
                self._progress(session)

    # -- routes ------------------------------------------------------------------------------

    def register_routes(self, app: Flask) -> None:
        def api(rule: str, method: str, operation_id: str):
            """Register a real API view: faults and recording (`operation`), then the bearer token, then the view."""

            def decorate(view):
                @wraps(view)
                def guarded(*args, **kwargs):
                    status = self._token_status()
                    if status != 200:
                        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
                        return Response(status=status, headers=headers)
                    try:
                        with self.lock:
                            return view(*args, **kwargs)
                    except Problem as problem:
                        return problem.response()

                app.add_url_rule(
                    API + rule, endpoint=operation_id, view_func=self.operation(operation_id)(guarded), methods=[method]
                )
                return view

            return decorate

        @app.post("/realms/<realm>/protocol/openid-connect/token")
        @self.operation("token")
        def token(realm):
            return self._issue_token(realm)

        @api("/sessions", "POST", "CreateSession")
        def create_session():
            command = self._body()
            check = Validation()
            if check.object(command, "command", SESSION_COMMAND_FIELDS):
                check.string(command, "id", "command", min_length=1)
                check.string(command, "candidateId", "command", required=True, min_length=3)
                if "lds" in command and check.object(command["lds"], "command.lds", {"id", "environment"}):
                    check.string(command["lds"], "id", "command.lds", required=True, min_length=1)
                    check.string(command["lds"], "environment", "command.lds", required=True, min_length=1)
                parts = command.get("parts")
                if parts is not None and not isinstance(parts, list):
                    check.add("command.parts", "must be an array")
                for index, part in enumerate(parts if isinstance(parts, list) else []):
                    check.part(part, f"command.parts[{index}]")
            check.raise_if_any()
            ids = [p["id"] for p in command.get("parts") or []]
            if len(set(ids)) != len(ids):
                raise Problem(
                    422, "One or more validation errors occurred.", errors={"command.parts": ["duplicate id"]}
                )
            session_id = command.get("id") or str(uuid.uuid4())
            if session_id in self.sessions:
                raise Problem(400, "Bad Request", f"a session with id {session_id} already exists")
            now = self._now()
            session = {
                "id": session_id,
                "createdAt": now,
                "lastModified": now,
                "candidateId": command["candidateId"],
            }
            if command.get("lds"):
                session["lds"] = dict(command["lds"])
            session["status"] = CREATED
            session["parts"] = [self._new_part(p["id"], p.get("pod")) for p in command.get("parts") or []]
            self.sessions[session_id] = session
            return jsonify(session)

        @api("/sessions/<session_id>", "GET", "GetSession")
        def get_session(session_id):
            return jsonify(self._session(session_id))

        @api("/sessions/parts", "POST", "AddPartToSession")
        def add_part():
            command = self._body()
            check = Validation()
            if check.object(command, "command", {"sessionId", "part"}):
                check.string(command, "sessionId", "command", required=True, min_length=1)
                if "part" not in command:
                    check.add("command.part", "is required")
                else:
                    check.part(command["part"], "command.part")
            check.raise_if_any()
            session = self._session(command["sessionId"])
            part_id = command["part"]["id"]
            if any(p["id"] == part_id for p in session["parts"]):
                raise Problem(400, "Bad Request", f"session {session['id']} already has a part {part_id}")
            session["parts"].append(self._new_part(part_id, command["part"].get("pod")))
            self._touch(session)
            return jsonify(session)

        @api("/sessions/<session_id>/parts/<part_id>", "DELETE", "RemovePartFromSession")
        def remove_part(session_id, part_id):
            session = self._session(session_id)
            part = self._part(session, part_id)
            session["parts"].remove(part)
            self.jobs.pop((session_id, part_id), None)
            self._touch(session)
            return jsonify(session)

        @api("/sessions/<session_id>/parts/<part_id>/grade", "POST", "GradeSessionPart")
        def grade(session_id, part_id):
            session = self._session(session_id)
            self._start_grading(session, self._part(session, part_id), item=None)
            return Response(status=202)

        @api(
            "/sessions/<session_id>/parts/<part_id>/sections/<int:section_index>/items/<int:item_index>/grade",
            "POST",
            "GradeSessionPartSectionItem",
        )
        def grade_item(session_id, part_id, section_index, item_index):
            session = self._session(session_id)
            part = self._part(session, part_id)
            report = part.get("scoreReport")
            if report is None:
                raise Problem(400, "Bad Request", "the part has no score report yet; grade the whole part first")
            if not 0 <= section_index < len(report["sections"]) or not 0 <= item_index < len(
                report["sections"][section_index]["items"]
            ):
                raise Problem(404, "Not Found", f"no item {item_index} in section {section_index}")
            self._start_grading(session, part, item=(section_index, item_index))
            return Response(status=202)

        @api("/sessions/<session_id>/parts/<part_id>/submit", "POST", "SubmitSessionPart")
        def submit(session_id, part_id):
            session = self._session(session_id)
            part = self._part(session, part_id)
            if part["status"] == REVIEWING:
                part["status"] = LOCKED
                part["lastSubmitted"] = self._now()
                self._audit(part, "submit")
                self._touch(session)
            elif part["status"] != LOCKED:
                raise Problem(
                    400, "Bad Request", f"part {part_id} is {part['status']}; only a graded part is submitted"
                )
            return jsonify(session)

        @api("/sessions/<session_id>/parts/<part_id>/pod", "POST", "AssignSessionPartPod")
        def assign_pod(session_id, part_id):
            return jsonify(self._set_pod(session_id, part_id, "assign pod"))

        @api("/sessions/<session_id>/parts/<part_id>/pod", "PUT", "UpdateSessionPartPod")
        def update_pod(session_id, part_id):
            return jsonify(self._set_pod(session_id, part_id, "update pod"))

        @api("/sessions/<session_id>/parts/<part_id>/pod", "DELETE", "UnassignPodFromSessionPart")
        def unassign_pod(session_id, part_id):
            session = self._session(session_id)
            part = self._changeable_part(session, part_id)
            part.pop("pod", None)
            self._audit(part, "unassign pod")
            self._touch(session)
            return jsonify(session)

        @api("/sessions/<session_id>/score/view", "GET", "ViewSessionScoreReport")
        def view_score(session_id):
            return Response(self._score_html(self._session(session_id)), mimetype="text/html")

        @api("/sessions/parts/<part_id>/ruleset/grading/rules", "GET", "DownloadGradingRuleset")
        def ruleset(part_id):
            toolkit = self._toolkit(part_id)
            guide = self._guide_html(part_id).encode()
            return jsonify(
                {
                    "id": part_id,
                    "grading": {
                        "packageMetadata": self._package_metadata(part_id),
                        "guide": {
                            "checksum": hashlib.sha256(guide).hexdigest(),
                            "files": {"guide.html": base64.b64encode(guide).decode()},
                        },
                        "ruleset": toolkit["ruleset"],
                    },
                    "scoring": toolkit["scoring"],
                }
            )

        @api("/sessions/parts/ruleset/grading/synchronize", "POST", "SynchronizeGradingToolkit")
        def synchronize():
            command = self._body()
            check = Validation()
            if check.object(command, "command", {"partId"}):
                check.string(command, "partId", "command", required=True, min_length=1)
            if check.errors:
                raise Problem(400, "Bad Request", errors=check.errors)
            toolkit = self._toolkit(command["partId"])
            toolkit["version"] += 1
            toolkit["published"] = self._now()
            return Response(status=204)

        @api("/sessions/parts/<part_id>/ruleset/grading/guide", "GET", "ViewGradingGuide")
        def guide(part_id):
            return Response(self._guide_html(part_id), mimetype="text/html")

        @api("/sessions/parts/ruleset/scoring", "PUT", "UpdateScoringRequirements")
        def scoring():
            command = self._body()
            check = Validation()
            if check.object(command, "command", {"partId", "scoringRequirements"}):
                check.string(command, "partId", "command", required=True, min_length=1)
                requirements = command.get("scoringRequirements")
                if check.object(requirements, "command.scoringRequirements", SCORING_FIELDS):
                    for key in ("rereadScore", "cutScore", "minScore"):
                        check.integer(requirements, key, "command.scoringRequirements", required=True)
                    check.integer(requirements, "version", "command.scoringRequirements")
            if check.errors:
                raise Problem(400, "Bad Request", errors=check.errors)
            toolkit = self._toolkit(command["partId"])
            previous = toolkit["scoring"].get("version", 0)
            toolkit["scoring"] = {"version": previous + 1} | command["scoringRequirements"]
            return Response(status=204)

        self._register_grading_control_api(app)

    def _register_grading_control_api(self, app: Flask) -> None:
        def control(view):
            @wraps(view)
            def wrapper(*args, **kwargs):
                try:
                    with self.lock:
                        return view(*args, **kwargs)
                except Problem as problem:
                    return jsonify(error_body(problem.status, problem.detail or problem.title)), problem.status

            return wrapper

        @app.post("/_sim/grading/<session_id>/complete")
        @control
        def sim_complete(session_id):
            payload = request.get_json(silent=True) or {}
            score = payload.get("score")
            if score is not None and (not isinstance(score, int) or isinstance(score, bool)):
                raise Problem(400, "Bad Request", "score must be an integer")
            for session, part in self._grading_parts(session_id, payload.get("part_id")):
                job = self.jobs.pop((session["id"], part["id"]))
                self._complete(session, part, job | {"outcome": "complete", "score": score})
            return jsonify(self._session(session_id))

        @app.post("/_sim/grading/<session_id>/fail")
        @control
        def sim_fail(session_id):
            payload = request.get_json(silent=True) or {}
            reason = str(payload.get("reason") or "grading failed (simulated)")
            for session, part in self._grading_parts(session_id, payload.get("part_id")):
                self.jobs.pop((session["id"], part["id"]))
                self._fail(session, part, reason)
            return jsonify(self._session(session_id))

        @app.post("/_sim/grading/outcomes")
        @control
        def sim_outcomes():
            payload = request.get_json(silent=True) or {}
            if payload.get("outcome") not in ("complete", "fail", "hang"):
                raise Problem(400, "Bad Request", "outcome must be complete, fail or hang")
            times = payload.get("times", 1)
            if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
                raise Problem(400, "Bad Request", "times must be a positive integer or null")
            score = payload.get("score")
            if score is not None and (not isinstance(score, int) or isinstance(score, bool)):
                raise Problem(400, "Bad Request", "score must be an integer")
            outcome = {
                "outcome": payload["outcome"],
                "score": score,
                "reason": payload.get("reason"),
                "session_id": payload.get("session_id"),
                "part_id": payload.get("part_id"),
                "times": times,
            }
            self.outcomes.append(outcome)
            return jsonify(outcome), 201

        @app.delete("/_sim/grading/outcomes")
        @control
        def sim_outcomes_clear():
            self.outcomes.clear()
            return jsonify({"cleared": True})

        @app.post("/_sim/tokens/revoke")
        @control
        def sim_revoke():
            revoked = len(self.active_tokens)
            self.active_tokens.clear()
            return jsonify({"revoked": revoked})

        self.events.register_control_api(app)

    # -- auth --------------------------------------------------------------------------------

    def _issue_token(self, realm: str):
        if realm != self.realm:
            return jsonify({"error": "Realm does not exist"}), 404
        client_id, secret = request.form.get("client_id"), request.form.get("client_secret")
        if request.authorization is not None and request.authorization.type == "basic":
            client_id, secret = request.authorization.username, request.authorization.password
        if request.form.get("grant_type") != "client_credentials":
            return jsonify({"error": "unsupported_grant_type", "error_description": "use client_credentials"}), 400
        client = self.clients.get(client_id or "")
        if client is None or not hmac.compare_digest(client["secret"].encode(), (secret or "").encode()):
            return jsonify({"error": "invalid_client", "error_description": "Invalid client credentials"}), 401
        requested = (request.form.get("scope") or "").split()
        if not set(requested) <= set(client["scopes"]):
            return jsonify({"error": "invalid_scope", "error_description": "Invalid scopes"}), 400
        scope = " ".join(requested or client["scopes"])
        now = self.clock.time()
        ttl = int(self.timings["token_ttl"])
        jti = uuid.uuid4().hex
        claims = {
            "iss": f"{request.host_url}realms/{realm}",
            "aud": AUDIENCE,
            "sub": client_id,
            "azp": client_id,
            "typ": "Bearer",
            "scope": scope,
            "iat": int(now),
            "exp": int(now - 1) if self.faults.flag("expire_tokens") else int(now + ttl),
            "jti": jti,
        }
        with self.lock:
            self.active_tokens.add(jti)
        return jsonify(
            {
                "access_token": jwt.encode(claims, self.signing_key, algorithm="HS256"),
                "expires_in": ttl,
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": scope,
            }
        )

    def _token_status(self) -> int:
        """200 for a valid bearer token with the `api` scope, 401 or 403 otherwise."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return 401
        try:
            # Time claims are judged against the simulator's clock below, not PyJWT's wall clock.
            claims = jwt.decode(
                token,
                self.signing_key,
                algorithms=["HS256"],
                audience=AUDIENCE,
                options={"verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return 401
        if claims.get("exp", 0) <= self.clock.time() or claims.get("jti") not in self.active_tokens:
            return 401
        if "api" not in str(claims.get("scope", "")).split():
            return 403
        request.environ["lcm.sim.actor"] = claims.get("sub") or "unknown"
        return 200

    # -- request helpers ---------------------------------------------------------------------

    @staticmethod
    def _body():
        """The request body as JSON or YAML (the spec accepts both); 400 when it cannot be read."""
        mimetype = request.mimetype
        text = request.get_data(as_text=True)
        try:
            if mimetype in YAML_TYPES:
                return yaml.safe_load(text)
            if mimetype in JSON_TYPES or mimetype.endswith("+json"):
                return json.loads(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise Problem(400, "Bad Request", f"the body cannot be parsed: {exc.__class__.__name__}") from None
        raise Problem(400, "Bad Request", f"unsupported content type {mimetype or '(none)'}")

    def _now(self) -> str:
        return iso(self.clock.now())

    def _session(self, session_id: str) -> dict:
        session = self.sessions.get(session_id)
        if session is None:
            raise Problem(404, "Not Found", f"no session {session_id}")
        self._progress(session)
        return session

    @staticmethod
    def _part(session: dict, part_id: str) -> dict:
        for part in session["parts"]:
            if part["id"] == part_id:
                return part
        raise Problem(404, "Not Found", f"session {session['id']} has no part {part_id}")

    def _changeable_part(self, session: dict, part_id: str) -> dict:
        part = self._part(session, part_id)
        if part["status"] in (GRADING, LOCKED):
            raise Problem(400, "Bad Request", f"part {part_id} is {part['status']}; its pod cannot change now")
        return part

    def _set_pod(self, session_id: str, part_id: str, action: str) -> dict:
        pod = self._body()
        check = Validation()
        check.pod(pod, "pod")
        check.raise_if_any()
        session = self._session(session_id)
        part = self._changeable_part(session, part_id)
        part["pod"] = pod
        self._audit(part, action)
        self._touch(session)
        return session

    def _new_part(self, part_id: str, pod: dict | None) -> dict:
        now = self._now()
        part = {
            "id": part_id,
            "createdAt": now,
            "lastModified": now,
            "firstGraded": None,
            "lastSubmitted": None,
            "status": CREATED,
            "statusReason": None,
        }
        if pod is not None:
            part["pod"] = pod
        part["auditTrail"] = []
        self._audit(part, "create")
        return part

    def _audit(self, part: dict, action: str, actor: str | None = None) -> None:
        actor = actor or request.environ.get("lcm.sim.actor", "grading-engine")
        part["auditTrail"].append(
            {
                "action": action,
                "actor": {"id": actor, "name": actor, "email": None},
                "actionable": part["id"],
                "timestamp": self._now(),
            }
        )
        part["lastModified"] = self._now()

    def _touch(self, session: dict) -> None:
        statuses = {part["status"] for part in session["parts"]}
        if FAULTED in statuses:
            session["status"] = FAULTED
        elif GRADING in statuses:
            session["status"] = GRADING
        elif statuses and statuses == {LOCKED}:
            session["status"] = LOCKED
        elif statuses and statuses <= {REVIEWING, LOCKED}:
            session["status"] = REVIEWING
        else:
            session["status"] = CREATED
        session["lastModified"] = self._now()

    # -- grading -----------------------------------------------------------------------------

    def _start_grading(self, session: dict, part: dict, item: tuple[int, int] | None) -> None:
        if part["status"] == LOCKED:
            raise Problem(400, "Bad Request", f"part {part['id']} is locked (submitted) and cannot be re-graded")
        if not (part.get("pod") or {}).get("devices"):
            raise Problem(400, "Bad Request", f"part {part['id']} has no pod with devices to collect from")
        if part["status"] == GRADING:
            return  # already running: grading is requested, not restarted
        outcome = self._next_outcome(session["id"], part["id"])
        job = outcome | {"due": self.clock.time() + self.timing("grading_delay"), "item": item}
        self.jobs[(session["id"], part["id"])] = job
        part["status"] = GRADING
        part["statusReason"] = None
        self._audit(part, "grade" if item is None else f"grade item {item[0]}.{item[1]}")
        self._touch(session)
        if job["outcome"] != "hang":
            self.wakeups.at(job["due"], session["id"])

    def _next_outcome(self, session_id: str, part_id: str) -> dict:
        """The scripted outcome for this job (session- or part-specific scripts first), else a score."""
        candidates = sorted(
            (o for o in self.outcomes if o["session_id"] in (None, session_id) and o["part_id"] in (None, part_id)),
            key=lambda o: (o["session_id"] is None, o["part_id"] is None),
        )
        if candidates:
            chosen = candidates[0]
            if chosen["times"] is not None:
                chosen["times"] -= 1
                if chosen["times"] <= 0:
                    self.outcomes.remove(chosen)
            return {"outcome": chosen["outcome"], "score": chosen["score"], "reason": chosen["reason"]}
        return {"outcome": "complete", "score": None, "reason": None}

    def _tick(self, session_id: str) -> None:
        with self.lock:
            session = self.sessions.get(session_id)
            if session is not None:
                self._progress(session)

    def _progress(self, session: dict) -> None:
        """Finish every grading job that is due by now (idempotent)."""
        now = self.clock.time()
        for part in list(session["parts"]):
            key = (session["id"], part["id"])
            job = self.jobs.get(key)
            if job is None or part["status"] != GRADING or job["outcome"] == "hang" or job["due"] > now:
                continue
            del self.jobs[key]
            if job["outcome"] == "fail":
                self._fail(session, part, job["reason"] or "collection failed: device did not answer (simulated)")
            else:
                self._complete(session, part, job)

    def _grading_parts(self, session_id: str, part_id: str | None) -> list[tuple[dict, dict]]:
        session = self._session(session_id)
        parts = [self._part(session, part_id)] if part_id else session["parts"]
        grading = [(session, part) for part in parts if part["status"] == GRADING]
        if not grading:
            raise Problem(409, "Conflict", f"no part of session {session_id} is being graded")
        return grading

    def _complete(self, session: dict, part: dict, job: dict) -> None:
        toolkit = self._toolkit(part["id"])
        previous = part.get("scoreReport")
        maximum = sum(item["points"] for section in toolkit["ruleset"]["sections"] for item in section["items"])
        score = job.get("score")
        if score is None:
            score = self.fixed_score if self.fixed_score is not None else self.random.randint(0, maximum)
        item = job.get("item")
        if item is not None and previous is not None:
            report = self._regraded_item(previous, item, score)
        else:
            report = self._score_report(part["id"], max(0, min(int(score), maximum)), previous)
        part["scoreReport"] = report
        part["status"] = REVIEWING
        part["firstGraded"] = part["firstGraded"] or self._now()
        self._audit(part, "graded", actor="grading-engine")
        self._touch(session)
        passed = report["score"] >= toolkit["scoring"]["cutScore"]
        breakdown = [
            {"criterion": section["id"], "points": section["score"], "max": section["maxScore"]}
            for section in report["sections"]
        ]
        data = self._event_data(session, part) | {
            "score": {"total": report["score"], "max": report["maxScore"], "breakdown": breakdown},
            "passed": passed,
        }
        self.events.emit(self.event_types["completed"], session["id"], data)

    def _fail(self, session: dict, part: dict, reason: str) -> None:
        part["status"] = FAULTED
        part["statusReason"] = reason
        self._audit(part, "grading failed", actor="grading-engine")
        self._touch(session)
        self.events.emit(self.event_types["failed"], session["id"], self._event_data(session, part) | {"error": reason})

    @staticmethod
    def _event_data(session: dict, part: dict) -> dict:
        return {
            "grading_session_id": session["id"],
            "session_id": session["id"],
            "part_id": part["id"],
            "candidate_id": session["candidateId"],
            "lds_session_id": (session.get("lds") or {}).get("id"),
            "status": part["status"],
        }

    def _score_report(self, part_id: str, score: int, previous: dict | None) -> dict:
        toolkit = self._toolkit(part_id)
        now = self._now()
        remaining = score
        sections = []
        for section in toolkit["ruleset"]["sections"]:
            items = []
            for item in section["items"]:
                earned = min(item["points"], remaining)
                remaining -= earned
                items.append(self._item_report(item, earned))
            sections.append(
                {
                    "id": str(section["index"]),
                    "createdAt": now,
                    "lastModified": now,
                    "score": sum(i["score"] for i in items),
                    "maxScore": sum(i["maxScore"] for i in items),
                    "items": items,
                }
            )
        return {
            "createdAt": now,
            "lastModified": now,
            "gradingToolkitPackageMetadata": self._package_metadata(part_id),
            "gradingRulesetVersion": str(toolkit["version"]),
            "scoringRulesetVersion": toolkit["scoring"].get("version", 1),
            "generation": (previous or {}).get("generation", 0) + 1,
            "revision": 0,
            "score": sum(s["score"] for s in sections),
            "maxScore": sum(s["maxScore"] for s in sections),
            "sections": sections,
            "variables": {},
        }

    def _regraded_item(self, previous: dict, item: tuple[int, int], score: int) -> dict:
        """Re-grading one item: that item gets `score` (capped at its points); the revision goes up."""
        report = copy.deepcopy(previous)
        section = report["sections"][item[0]]
        target = section["items"][item[1]]
        target["score"] = max(0, min(int(score), target["maxScore"]))
        section["score"] = sum(i["score"] for i in section["items"])
        section["lastModified"] = report["lastModified"] = self._now()
        report["score"] = sum(s["score"] for s in report["sections"])
        report["revision"] += 1
        return report

    @staticmethod
    def _item_report(item: dict, earned: int) -> dict:
        results = []
        for index, rule in enumerate(item.get("rules") or []):
            result = {"ruleIndex": index, "command": rule.get("command"), "commandOutput": "(simulated output)"}
            if earned < item["points"]:
                result["issue"] = {"type": "mismatch", "description": f"expected {rule.get('match')!r} in the output"}
            results.append(result)
        return {
            "id": item["id"],
            "score": earned,
            "type": item.get("webItemType") or "lab",
            "maxScore": item["points"],
            "fieldTest": bool(item.get("fieldTest")),
            "evaluationResults": results,
            "questions": [],
        }

    # -- toolkit (ruleset, scoring, guide) ---------------------------------------------------

    def _toolkit(self, part_id: str) -> dict:
        if part_id not in self.toolkits:
            self.toolkits[part_id] = {
                "version": 1,
                "published": self._now(),
                "ruleset": copy.deepcopy(self.ruleset_fixture),
                "scoring": dict(self.scoring_fixture),
            }
        return self.toolkits[part_id]

    def _package_metadata(self, part_id: str) -> dict:
        toolkit = self._toolkit(part_id)
        return {
            "datePublished": toolkit["published"],
            "version": str(toolkit["version"]),
            "publisher": "lcm-simulator",
            "formName": part_id,
            "formId": part_id,
            "trackShortName": "LCM",
        }

    def _guide_html(self, part_id: str) -> str:
        toolkit = self._toolkit(part_id)
        rows = "".join(
            f"<li>{html.escape(str(item['id']))} {html.escape(str(item.get('description') or ''))}"
            f" ({item['points']} points)</li>"
            for section in toolkit["ruleset"]["sections"]
            for item in section["items"]
        )
        return f"<html><body><h1>Grading guide: {html.escape(part_id)}</h1><ul>{rows}</ul></body></html>"

    @staticmethod
    def _score_html(session: dict) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(part['id'])}</td><td>{html.escape(part['status'])}</td>"
            f"<td>{(part.get('scoreReport') or {}).get('score', '-')}"
            f" / {(part.get('scoreReport') or {}).get('maxScore', '-')}</td></tr>"
            for part in session["parts"]
        )
        return (
            f"<html><body><h1>Score report: {html.escape(session['id'])}</h1>"
            f"<table><tr><th>Part</th><th>Status</th><th>Score</th></tr>{rows}</table></body></html>"
        )
