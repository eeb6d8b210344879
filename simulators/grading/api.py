"""The Grading Engine simulator's API v1 routes (all 15 operations of `grading-engine-openapi.json`) and its
Keycloak-style token endpoint. Each view is `view(sim, **url_args)`; `register(sim, app)` puts them on the app
behind faults, recording and the bearer token (see `simulators.common_stateful.register_api`)."""

import base64
import hashlib
import hmac
import json
import uuid

import jwt
import yaml
from flask import Flask, Response, jsonify, request

from simulators.common import bind
from simulators.common_stateful import register_api
from simulators.grading.state import CREATED, LOCKED, REVIEWING, Problem

API = "/api/v1"
AUDIENCE = "grading-engine"
JSON_TYPES = {"application/json", "text/json"}
YAML_TYPES = {"application/yaml", "application/x-yaml"}
TOKEN_RULE = "/realms/<realm>/protocol/openid-connect/token"

SESSION_COMMAND_FIELDS = {"id", "candidateId", "lds", "parts"}
PART_COMMAND_FIELDS = {"id", "pod"}
POD_FIELDS = {"id", "devices"}
DEVICE_FIELDS = {"label", "hostname", "collector", "interfaces"}
INTERFACE_FIELDS = {"name", "protocol", "host", "port", "authentication", "configuration"}
SCORING_FIELDS = {"version", "rereadScore", "cutScore", "minScore"}
INT32 = (-(2**31), 2**31 - 1)


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

    def session_command(self, command) -> None:
        if not self.object(command, "command", SESSION_COMMAND_FIELDS):
            return
        self.string(command, "id", "command", min_length=1)
        self.string(command, "candidateId", "command", required=True, min_length=3)
        if "lds" in command and self.object(command["lds"], "command.lds", {"id", "environment"}):
            self.string(command["lds"], "id", "command.lds", required=True, min_length=1)
            self.string(command["lds"], "environment", "command.lds", required=True, min_length=1)
        parts = command.get("parts")
        if parts is not None and not isinstance(parts, list):
            self.add("command.parts", "must be an array")
        for index, part in enumerate(parts if isinstance(parts, list) else []):
            self.part(part, f"command.parts[{index}]")


# -- the token endpoint ------------------------------------------------------------------------


def token(sim, realm):
    if realm != sim.realm:
        return jsonify({"error": "Realm does not exist"}), 404
    client_id, secret = request.form.get("client_id"), request.form.get("client_secret")
    if request.authorization is not None and request.authorization.type == "basic":
        client_id, secret = request.authorization.username, request.authorization.password
    if request.form.get("grant_type") != "client_credentials":
        return jsonify({"error": "unsupported_grant_type", "error_description": "use client_credentials"}), 400
    client = sim.clients.get(client_id or "")
    if client is None or not hmac.compare_digest(client["secret"].encode(), (secret or "").encode()):
        return jsonify({"error": "invalid_client", "error_description": "Invalid client credentials"}), 401
    requested = (request.form.get("scope") or "").split()
    if not set(requested) <= set(client["scopes"]):
        return jsonify({"error": "invalid_scope", "error_description": "Invalid scopes"}), 400
    scope = " ".join(requested or client["scopes"])
    ttl = int(sim.timings["token_ttl"])
    return jsonify(
        {
            "access_token": _issue_token(sim, realm, client_id, scope, ttl),
            "expires_in": ttl,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": scope,
        }
    )


def _issue_token(sim, realm: str, client_id: str, scope: str, ttl: int) -> str:
    now = sim.clock.time()
    jti = uuid.uuid4().hex
    claims = {
        "iss": f"{request.host_url}realms/{realm}",
        "aud": AUDIENCE,
        "sub": client_id,
        "azp": client_id,
        "typ": "Bearer",
        "scope": scope,
        "iat": int(now),
        "exp": int(now - 1) if sim.faults.flag("expire_tokens") else int(now + ttl),
        "jti": jti,
    }
    with sim.lock:
        sim.active_tokens.add(jti)
    return jwt.encode(claims, sim.signing_key, algorithm="HS256")


def refuse_token(sim):
    """None for a valid bearer token with the `api` scope, else the 401 or 403 answer (no body)."""
    status = _token_status(sim)
    if status == 200:
        return None
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
    return Response(status=status, headers=headers)


def _token_status(sim) -> int:
    """200 for a valid bearer token with the `api` scope, 401 or 403 otherwise."""
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not bearer:
        return 401
    try:
        # Time claims are judged against the simulator's clock below, not PyJWT's wall clock.
        claims = jwt.decode(
            bearer,
            sim.signing_key,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        return 401
    if claims.get("exp", 0) <= sim.clock.time() or claims.get("jti") not in sim.active_tokens:
        return 401
    if "api" not in str(claims.get("scope", "")).split():
        return 403
    request.environ["lcm.sim.actor"] = claims.get("sub") or "unknown"
    return 200


# -- sessions and parts ------------------------------------------------------------------------


def create_session(sim):
    command = body()
    check = Validation()
    check.session_command(command)
    check.raise_if_any()
    ids = [p["id"] for p in command.get("parts") or []]
    if len(set(ids)) != len(ids):
        raise Problem(422, "One or more validation errors occurred.", errors={"command.parts": ["duplicate id"]})
    session_id = command.get("id") or str(uuid.uuid4())
    if session_id in sim.sessions:
        raise Problem(400, "Bad Request", f"a session with id {session_id} already exists")
    now = sim._now()
    session = {
        "id": session_id,
        "createdAt": now,
        "lastModified": now,
        "candidateId": command["candidateId"],
    }
    if command.get("lds"):
        session["lds"] = dict(command["lds"])
    session["status"] = CREATED
    session["parts"] = [sim._new_part(p["id"], p.get("pod"), actor()) for p in command.get("parts") or []]
    sim.sessions[session_id] = session
    return jsonify(session)


def get_session(sim, session_id):
    return jsonify(sim._session(session_id))


def add_part(sim):
    command = body()
    check = Validation()
    if check.object(command, "command", {"sessionId", "part"}):
        check.string(command, "sessionId", "command", required=True, min_length=1)
        if "part" not in command:
            check.add("command.part", "is required")
        else:
            check.part(command["part"], "command.part")
    check.raise_if_any()
    session = sim._session(command["sessionId"])
    part_id = command["part"]["id"]
    if any(p["id"] == part_id for p in session["parts"]):
        raise Problem(400, "Bad Request", f"session {session['id']} already has a part {part_id}")
    session["parts"].append(sim._new_part(part_id, command["part"].get("pod"), actor()))
    sim._touch(session)
    return jsonify(session)


def remove_part(sim, session_id, part_id):
    session = sim._session(session_id)
    part = sim._part(session, part_id)
    session["parts"].remove(part)
    sim.jobs.pop((session_id, part_id), None)
    sim._touch(session)
    return jsonify(session)


def grade(sim, session_id, part_id):
    session = sim._session(session_id)
    sim._start_grading(session, sim._part(session, part_id), None, actor())
    return Response(status=202)


def grade_item(sim, session_id, part_id, section_index, item_index):
    session = sim._session(session_id)
    part = sim._part(session, part_id)
    report = part.get("scoreReport")
    if report is None:
        raise Problem(400, "Bad Request", "the part has no score report yet; grade the whole part first")
    if not 0 <= section_index < len(report["sections"]) or not 0 <= item_index < len(
        report["sections"][section_index]["items"]
    ):
        raise Problem(404, "Not Found", f"no item {item_index} in section {section_index}")
    sim._start_grading(session, part, (section_index, item_index), actor())
    return Response(status=202)


def submit(sim, session_id, part_id):
    session = sim._session(session_id)
    part = sim._part(session, part_id)
    if part["status"] == REVIEWING:
        part["status"] = LOCKED
        part["lastSubmitted"] = sim._now()
        sim._audit(part, "submit", actor())
        sim._touch(session)
    elif part["status"] != LOCKED:
        raise Problem(400, "Bad Request", f"part {part_id} is {part['status']}; only a graded part is submitted")
    return jsonify(session)


def assign_pod(sim, session_id, part_id):
    return jsonify(set_pod(sim, session_id, part_id, "assign pod"))


def update_pod(sim, session_id, part_id):
    return jsonify(set_pod(sim, session_id, part_id, "update pod"))


def unassign_pod(sim, session_id, part_id):
    session = sim._session(session_id)
    part = sim._changeable_part(session, part_id)
    part.pop("pod", None)
    sim._audit(part, "unassign pod", actor())
    sim._touch(session)
    return jsonify(session)


def view_score(sim, session_id):
    return Response(sim._score_html(sim._session(session_id)), mimetype="text/html")


# -- toolkit (ruleset, scoring, guide) ---------------------------------------------------------


def ruleset(sim, part_id):
    toolkit = sim._toolkit(part_id)
    guide_bytes = sim._guide_html(part_id).encode()
    return jsonify(
        {
            "id": part_id,
            "grading": {
                "packageMetadata": sim._package_metadata(part_id),
                "guide": {
                    "checksum": hashlib.sha256(guide_bytes).hexdigest(),
                    "files": {"guide.html": base64.b64encode(guide_bytes).decode()},
                },
                "ruleset": toolkit["ruleset"],
            },
            "scoring": toolkit["scoring"],
        }
    )


def synchronize(sim):
    command = body()
    check = Validation()
    if check.object(command, "command", {"partId"}):
        check.string(command, "partId", "command", required=True, min_length=1)
    if check.errors:
        raise Problem(400, "Bad Request", errors=check.errors)
    toolkit = sim._toolkit(command["partId"])
    toolkit["version"] += 1
    toolkit["published"] = sim._now()
    return Response(status=204)


def guide(sim, part_id):
    return Response(sim._guide_html(part_id), mimetype="text/html")


def scoring(sim):
    command = body()
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
    toolkit = sim._toolkit(command["partId"])
    previous = toolkit["scoring"].get("version", 0)
    toolkit["scoring"] = {"version": previous + 1} | command["scoringRequirements"]
    return Response(status=204)


# -- request helpers ---------------------------------------------------------------------------


def body():
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


def actor() -> str:
    """Who the audit trail names for this request: the token's client (set by `refuse_token`)."""
    return request.environ.get("lcm.sim.actor", "grading-engine")


def set_pod(sim, session_id: str, part_id: str, action: str) -> dict:
    pod = body()
    check = Validation()
    check.pod(pod, "pod")
    check.raise_if_any()
    session = sim._session(session_id)
    part = sim._changeable_part(session, part_id)
    part["pod"] = pod
    sim._audit(part, action, actor())
    sim._touch(session)
    return session


# -- registration ------------------------------------------------------------------------------

_PART = "/sessions/<session_id>/parts/<part_id>"
_TOOLKIT = "/sessions/parts"

# (rule under API, method, operationId, view)
ROUTES = (
    ("/sessions", "POST", "CreateSession", create_session),
    ("/sessions/<session_id>", "GET", "GetSession", get_session),
    ("/sessions/parts", "POST", "AddPartToSession", add_part),
    (_PART, "DELETE", "RemovePartFromSession", remove_part),
    (_PART + "/grade", "POST", "GradeSessionPart", grade),
    (
        _PART + "/sections/<int:section_index>/items/<int:item_index>/grade",
        "POST",
        "GradeSessionPartSectionItem",
        grade_item,
    ),
    (_PART + "/submit", "POST", "SubmitSessionPart", submit),
    (_PART + "/pod", "POST", "AssignSessionPartPod", assign_pod),
    (_PART + "/pod", "PUT", "UpdateSessionPartPod", update_pod),
    (_PART + "/pod", "DELETE", "UnassignPodFromSessionPart", unassign_pod),
    ("/sessions/<session_id>/score/view", "GET", "ViewSessionScoreReport", view_score),
    (_TOOLKIT + "/<part_id>/ruleset/grading/rules", "GET", "DownloadGradingRuleset", ruleset),
    (_TOOLKIT + "/ruleset/grading/synchronize", "POST", "SynchronizeGradingToolkit", synchronize),
    (_TOOLKIT + "/<part_id>/ruleset/grading/guide", "GET", "ViewGradingGuide", guide),
    (_TOOLKIT + "/ruleset/scoring", "PUT", "UpdateScoringRequirements", scoring),
)


def register(sim, app: Flask) -> None:
    """The token endpoint (recorded and faulted as `token`), then the API under `/api/v1`."""
    app.add_url_rule(TOKEN_RULE, endpoint="token", view_func=sim.operation("token")(bind(token, sim)), methods=["POST"])
    register_api(sim, app, API, ROUTES, refuse_token)
