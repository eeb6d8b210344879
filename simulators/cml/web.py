"""HTTP helpers the CML views share: JSON answers, CML's error body, the request's body and query flags,
and a dropped connection."""

import contextlib
import json
import socket

from flask import Response, request

from simulators.common import error_body


def json_response(value, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, mimetype="application/json")


def no_content(status: int = 204) -> Response:
    return Response(status=status)


def error_response(status: int, description: str) -> Response:
    return json_response(error_body(status, description), status)


def body_json():
    return request.get_json(silent=True, force=True)


def query_flag(name: str) -> bool | None:
    """A boolean query parameter as FastAPI reads it (None when absent)."""
    value = request.args.get(name)
    if value is None:
        return None
    return value.lower() in ("1", "true", "yes", "on")


def drop_connection() -> Response:
    """Shut the client's socket so it sees a reset connection; the response is never delivered."""
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    return error_response(502, "connection dropped by the simulator")
