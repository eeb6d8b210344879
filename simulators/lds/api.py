"""The LDS simulator's Reservations API v3 routes (every operation of `lds-reservations-v3-subset.openapi.json`)
and the browser-facing launch page. Each view is `view(sim, **url_args)`; `register(sim, app)` puts them on the
app behind faults, recording and HTTP Basic auth (see `simulators.common_stateful.register_api`)."""

import hmac
import uuid
from datetime import UTC, datetime

import jwt
from flask import Flask, Response, jsonify, request

from simulators.common import add_routes, error_body, iso
from simulators.common_stateful import SimError, is_int, register_api
from simulators.lds.state import (
    API,
    ENDED_STATES,
    PART_PENDING,
    SESSION_PAUSED,
    SESSION_PENDING,
    SESSION_RUNNING,
    SESSION_TIMEOUT,
    SESSION_USER_FINISHED,
    LdsSession,
    Part,
)

# LDSSession string fields; a new session needs them all, and the rest of REQUIRED_SESSION_FIELDS, in the
# spec's order (the 400 lists the missing ones in it).
_WHO = ("origin", "auth_id", "auth_id_type", "candidate_id", "location")
_NAME = ("first_name", "last_name")
STRING_FIELDS = _WHO + _NAME
REQUIRED_SESSION_FIELDS = (*_WHO, "timezone_offset", *_NAME, "rack_group", "rack_number", "scheduled_date")
NULLABLE_STRING_FIELDS = ("password", "email_address")
DEVICE_STRING_FIELDS = ("device_label", "protocol", "host")


# -- content -----------------------------------------------------------------------------------


def get_lab_folder(sim, form_qualified_name):
    return jsonify(sim._folder(form_qualified_name))


def put_lab_folder(sim, form_qualified_name):
    folder = sim._folder(form_qualified_name)
    folder["Version"] = str(int(folder["Version"]) + 1)
    folder["DatePublished"] = iso(sim.clock.now())
    return jsonify(folder)


def validate_lab_folder(sim, form_qualified_name):
    folder = sim._folder(form_qualified_name)
    return jsonify({"is_valid": True, "message": f"{form_qualified_name} version {folder['Version']} is valid"})


# -- sessions ----------------------------------------------------------------------------------


def latest_for_state(sim):
    state = request.args.get("state")
    if not state:
        raise SimError(400, "query parameter state is required")
    matching = [s for s in sim.sessions.values() if s.state.upper() == state.upper()]
    if not matching:
        raise SimError(404, f"no LDS session in state {state}")
    latest = max(matching, key=lambda s: s.created)
    return jsonify({"latest_session_id": latest.id, "state": latest.state})


def create_session(sim):
    body = json_body()
    fields = session_fields(body, partial=False)
    raw_parts = body.get("session_parts") or []
    if not isinstance(raw_parts, list):
        raise SimError(400, "session_parts must be an array")
    parts = [Part(**part_fields(sim, p)) for p in raw_parts]
    session = LdsSession(id=str(uuid.uuid4()), fields=fields, created=sim.clock.time(), parts=parts)
    sim._apply_length(session)
    sim.sessions[session.id] = session
    sim._log_status(session, SESSION_PENDING, {n: PART_PENDING for n in range(1, len(parts) + 1)})
    location = f"{request.host_url.rstrip('/')}{API}/lab_session/{session.id}"
    return jsonify({"location": location, "session_id": session.id, "message": "Session created"})


def get_session(sim, ldssession_id):
    return jsonify(sim._session_json(sim._session(ldssession_id)))


def patch_session(sim, ldssession_id):
    session = sim._open_session(ldssession_id)
    session.fields.update(session_fields(json_body(), partial=True))
    sim._apply_length(session)
    return jsonify(sim._session_json(session))


def pause(sim, ldssession_id):
    sim._pause(sim._open_session(ldssession_id))
    return Response(status=204)


def resume(sim, ldssession_id):
    sim._resume(sim._open_session(ldssession_id))
    return Response(status=204)


def release(sim, ldssession_id):
    if not request.is_json:
        raise SimError(415, "release needs a JSON body (send {})")
    json_body(allow_null=True)
    sim._release(sim._session(ldssession_id))
    return Response(status=204)


def refresh_status(sim, ldssession_id):
    session = sim._open_session(ldssession_id)
    if session.current_part < len(session.parts):
        return jsonify({"result": "Not on final LDS Session Part"})
    if session.state in (SESSION_RUNNING, SESSION_PAUSED):
        sim._finish(session, reason="refresh_status on the final part")
        return jsonify({"result": "LDS Session Part and LDS Session set user finished"})
    return jsonify({"result": f"LDS Session is {session.state}"})


def force_user_finished(sim, ldssession_id):
    session = sim._open_session(ldssession_id)
    if session.state in (SESSION_USER_FINISHED, SESSION_TIMEOUT):
        raise SimError(409, f"LDS session already ended ({session.state})")
    sim._finish(session, reason="force_user_finished", ended_by="admin")
    return jsonify({"result": "LDS Session Part and LDS Session set user finished"})


def launch_url(sim, ldssession_id):
    session = sim._open_session(ldssession_id)
    if session.state in ENDED_STATES:
        raise SimError(409, f"LDS session has ended ({session.state})")
    token = sim._launch_token(session)
    sim._launch_fetched(session)
    return jsonify({"url": f"{request.host_url}lablet/launch?token={token}"})


def statuses(sim, ldssession_id):
    session = sim._session(ldssession_id)
    return jsonify(
        {
            "id": session.id,
            "session_statuses": list(session.session_statuses),
            "session_part_statuses": list(session.part_statuses),
        }
    )


# -- parts -------------------------------------------------------------------------------------


def get_part(sim, ldssession_id, part_num):
    return jsonify(sim._part(sim._session(ldssession_id), part_num).to_json())


def add_part(sim, ldssession_id, part_num):
    session = sim._open_session(ldssession_id)
    if part_num != len(session.parts) + 1:
        raise SimError(409, f"the next part of this session is number {len(session.parts) + 1}")
    part = Part(**part_fields(sim, json_body()))
    session.parts.append(part)
    sim._apply_length(session)
    sim._log_status(session, None, {part_num: PART_PENDING})
    return jsonify(part.to_json())


def update_part(sim, ldssession_id, part_num):
    session = sim._open_session(ldssession_id)
    part = sim._part(session, part_num)
    body = json_body()
    if not isinstance(body, dict):
        raise SimError(400, "a session part must be a JSON object")
    current = {
        "repository_type": part.repository_type,
        "form_qualified_name": part.form_qualified_name,
        "track": part.track,
        "exam_version": part.exam_version,
        "variables": part.variables,
    }
    for name, value in part_fields(sim, current | body).items():
        setattr(part, name, value)
    return jsonify(part.to_json())


def delete_part(sim, ldssession_id, part_num):
    session = sim._open_session(ldssession_id)
    part = sim._part(session, part_num)
    if part.state != PART_PENDING:
        raise SimError(409, f"part {part_num} is {part.state}; only a pending part can be deleted")
    session.parts.remove(part)
    return Response(status=204)


def extend_part(sim, ldssession_id, part_num):
    adjust(sim, ldssession_id, part_num, "time_extension")
    return Response(status=204)


def adjust_part(sim, ldssession_id, part_num):
    adjust(sim, ldssession_id, part_num, "time_adjustment")
    return Response(status=204)


def collect(sim, ldssession_id, part_num):
    return jsonify({"sections": sim._part(sim._session(ldssession_id), part_num).responses})


def get_devices(sim, ldssession_id, part_num):
    return jsonify(sim._part(sim._session(ldssession_id), part_num).devices)


def put_devices(sim, ldssession_id, part_num):
    part = sim._part(sim._open_session(ldssession_id), part_num)
    part.devices = devices(json_body())
    return jsonify(part.devices)


def get_variables(sim, ldssession_id, part_num):
    return jsonify({"variables": sim._part(sim._session(ldssession_id), part_num).variables})


def put_variables(sim, ldssession_id, part_num):
    part = sim._part(sim._open_session(ldssession_id), part_num)
    body = json_body()
    if not isinstance(body, dict):
        raise SimError(400, "variables must be a JSON object of name/value pairs")
    part.variables.update(body)
    return jsonify({"variables": part.variables})


# -- the launch page ---------------------------------------------------------------------------


def lablet_launch(sim):
    """The browser-facing launch page (not part of the Reservations API, so neither recorded nor faulted)."""
    try:
        # Time claims are judged against the simulator's clock below, not PyJWT's wall clock.
        claims = jwt.decode(
            request.args.get("token", ""),
            sim.signing_key,
            algorithms=["HS256"],
            audience="lablet",
            options={"verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        return Response("<h1>Invalid launch link</h1>", status=401, mimetype="text/html")
    if claims.get("exp", 0) <= sim.clock.time():
        return Response("<h1>This launch link has expired</h1>", status=401, mimetype="text/html")
    with sim.lock:
        session = sim.sessions.get(claims.get("sub", ""))
        if session is None:
            return Response("<h1>Unknown session</h1>", status=404, mimetype="text/html")
        sim._progress(session)
        if session.state in ENDED_STATES:
            return Response(f"<h1>Session {session.state}</h1>", status=409, mimetype="text/html")
        sim._login(session)
        devices = "".join(
            f"<li>{d['device_label']} ({d['protocol']} {d['host']}:{d.get('port')})</li>"
            for d in (session.part.devices if session.part else [])
        )
    return Response(f"<h1>Lablet running</h1><ul>{devices}</ul>", mimetype="text/html")


# -- request helpers ---------------------------------------------------------------------------


def refuse_unauthorized(sim):
    """None for valid HTTP Basic credentials of a configured user, else the 401 answer."""
    if _authorized(sim):
        return None
    response = jsonify(error_body(401, "valid HTTP Basic credentials are required"))
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="LDS"'
    return response


def _authorized(sim) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic" or auth.username not in sim.users:
        return False
    return hmac.compare_digest(sim.users[auth.username].encode(), (auth.password or "").encode())


def json_body(allow_null: bool = False):
    if not request.is_json:
        raise SimError(415, "the request body must be JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if body is None and not (allow_null and request.get_data(as_text=True).strip() == "null"):
        raise SimError(400, "the request body is not valid JSON")
    return body


def session_fields(body, *, partial: bool) -> dict:
    if not isinstance(body, dict):
        raise SimError(400, "the LDS session must be a JSON object")
    if not partial:
        missing = [name for name in REQUIRED_SESSION_FIELDS if body.get(name) in (None, "")]
        if missing:
            raise SimError(400, f"missing required field(s): {', '.join(missing)}")
    return _string_fields(body) | _rack_and_offset(body) | _time_fields(body)


def _string_fields(body: dict) -> dict:
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
    return fields


def _rack_and_offset(body: dict) -> dict:
    fields = {}
    if "rack_group" in body:
        fields["rack_group"] = str(body["rack_group"])
    if "rack_number" in body:
        # Typed string, but the upstream examples send the integer 1 (§3.2): accept both, answer a string.
        if not (isinstance(body["rack_number"], str) or is_int(body["rack_number"])):
            raise SimError(400, "rack_number must be a string")
        fields["rack_number"] = str(body["rack_number"])
    if "timezone_offset" in body:
        if not is_int(body["timezone_offset"]):
            raise SimError(400, "timezone_offset must be an integer")
        fields["timezone_offset"] = body["timezone_offset"]
    return fields


def _time_fields(body: dict) -> dict:
    fields = {}
    if "scheduled_date" in body:
        fields["scheduled_date"] = _parse_datetime(body["scheduled_date"], "scheduled_date")
    if body.get("user_timeslot_end") is not None:
        fields["user_timeslot_end"] = _parse_datetime(body["user_timeslot_end"], "user_timeslot_end")
    if body.get("max_length_minutes") is not None:
        if not is_int(body["max_length_minutes"]) or body["max_length_minutes"] < 1:
            raise SimError(400, "max_length_minutes must be a positive integer")
        fields["max_length_minutes"] = body["max_length_minutes"]
    return fields


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


def part_fields(sim, body) -> dict:
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
    if fields["form_qualified_name"] and not sim._known(fields["form_qualified_name"]):
        raise SimError(404, f"unknown form_qualified_name {fields['form_qualified_name']}")
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        raise SimError(400, "variables must be an object")
    fields["variables"] = dict(variables)
    return fields


def devices(body) -> list[dict]:
    if not isinstance(body, list):
        raise SimError(400, "devices must be a JSON array")
    return [_device(index, device) for index, device in enumerate(body)]


def _device(index: int, device) -> dict:
    if not isinstance(device, dict):
        raise SimError(400, f"device {index} must be an object")
    for name in DEVICE_STRING_FIELDS:
        if not isinstance(device.get(name), str) or not device[name]:
            raise SimError(400, f"device {index}: {name} is required")
    port, password = device.get("port"), device.get("password")
    if port is not None and (not is_int(port) or not 0 < port < 65536):
        raise SimError(400, f"device {index}: port must be an integer 1-65535 or null")
    if password is not None and not isinstance(password, str):
        raise SimError(400, f"device {index}: password must be a string or null")
    return {name: device[name] for name in DEVICE_STRING_FIELDS} | {"port": port, "password": password}


def adjust(sim, ldssession_id: str, part_num: int, key: str) -> None:
    part = sim._part(sim._open_session(ldssession_id), part_num)
    body = json_body()
    if not isinstance(body, dict) or not is_int(body.get(key)):
        raise SimError(400, f"{key} (minutes, integer) is required")
    part.extra_seconds += body[key] * 60
    sim._schedule_end(sim._session(ldssession_id))


# -- registration ------------------------------------------------------------------------------

_SESSION = "/lab_session/<ldssession_id>"
_PART = _SESSION + "/part/<int:part_num>"
_FOLDER = "/lab_folder/minio/<path:form_qualified_name>"

# (rule under API, method, operationId, view)
ROUTES = (
    (_FOLDER, "GET", "getLabFolderMinIO", get_lab_folder),
    (_FOLDER, "PUT", "putLabFolderMinIO", put_lab_folder),
    (_FOLDER + "/validate", "GET", "getLabFolderMinIOValidate", validate_lab_folder),
    ("/lab_session", "GET", "getLDSSessionLatestForState", latest_for_state),
    ("/lab_session", "POST", "postLDSSession", create_session),
    (_SESSION, "GET", "getLDSSession", get_session),
    (_SESSION, "PATCH", "patchLDSSession", patch_session),
    (_SESSION + "/pause", "PUT", "putLDSSessionPause", pause),
    (_SESSION + "/resume", "PUT", "putLDSSessionRestart", resume),
    (_SESSION + "/release", "POST", "putLDSSessionFinalize", release),
    (_SESSION + "/refresh_status", "PUT", "putLDSSessionRefreshStatus", refresh_status),
    (_SESSION + "/force_user_finished", "PUT", "putLDSSessionForceUserFinished", force_user_finished),
    (_SESSION + "/lablet_launch_url", "GET", "getLDSSessionLabletLaunchURL", launch_url),
    (_SESSION + "/statuses", "GET", "getLDSSessionStatuses", statuses),
    (_PART, "GET", "getLDSSessionPart", get_part),
    (_PART, "POST", "postLDSSessionPart", add_part),
    (_PART, "PUT", "putLDSSessionPart", update_part),
    (_PART, "DELETE", "deleteLDSSessionPart", delete_part),
    (_PART + "/extend", "PUT", "putLDSSessionPartExtension", extend_part),
    (_PART + "/adjust", "PUT", "putLDSSessionPartAdjustment", adjust_part),
    (_PART + "/collect", "GET", "getLDSSessionPartResponses", collect),
    (_PART + "/devices", "GET", "getLDSSessionPartDevice", get_devices),
    (_PART + "/devices", "PUT", "putLDSSessionPartDevice", put_devices),
    (_PART + "/variables", "GET", "getLDSSessionPartVariables", get_variables),
    (_PART + "/variables", "PUT", "putLDSSessionPartVariables", put_variables),
)


def register(sim, app: Flask) -> None:
    """The Reservations API under `/reservations/v3`, then the launch page."""
    register_api(sim, app, API, ROUTES, refuse_unauthorized)
    add_routes(app, sim, [("GET", "/lablet/launch", lablet_launch)])
