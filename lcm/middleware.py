"""Request id middleware: accepts or creates `X-Request-ID` and echoes it on the response."""

import re
import uuid

from lcm.logging import request_id_var

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def current_request_id() -> str:
    """The request id of the request (or task) being handled, `-` outside one."""
    return request_id_var.get()


class RequestIdMiddleware:
    """Binds a request id for logging and history rows; a malformed incoming id is replaced."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response
