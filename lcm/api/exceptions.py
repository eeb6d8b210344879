"""The REST error contract (SPEC §5.1), for every error a view can meet.

- 400 `{field: [messages]}`: serializer and filter errors, service ValidationErrors, parse
  errors (under `non_field_errors`); nested fields are flattened to `a.b` / `a[0].b`.
- 401 / 403 / 404 / 405 / 406 / 413 / 415 / 429 `{"detail": ...}` (401 with `WWW-Authenticate`,
  429 with `Retry-After` and `retry_after`).
- 409 `{"detail", "code": "invalid_transition", "current_status", "allowed": [...]}` for a
  refused state change; `{"detail", "code": "conflict", "existing_id", "field"}` for a clash
  with existing data (a duplicate `reservation_id` names the session it is booked as); `code` `capacity`
  with the verdict under `capacity` when admission refuses a booking the fleet cannot hold.
- Anything else is a bug: logged with its traceback and answered 500 `{"detail"}` as JSON.
"""

import logging

from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django_fsm import ConcurrentTransition
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from lcm.api.parsers import RequestTooLarge
from lcm.errors import Conflict, InvalidTransition

logger = logging.getLogger("lcm.api.exceptions")

NON_FIELD = api_settings.NON_FIELD_ERRORS_KEY


def _messages(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value if not isinstance(item, (dict, list, tuple))]
    return [str(value)]


_NESTED = (dict, list, tuple)


def flatten_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """`{"a": {"b": ["x"]}, "c": [{"d": ["y"]}]}` → `{"a.b": ["x"], "c[0].d": ["y"]}`.

    A bare list of messages goes to `non_field_errors`.
    """
    if isinstance(detail, dict):
        return _flatten_dict(detail, prefix)
    if isinstance(detail, (list, tuple)):
        return _flatten_list(detail, prefix)
    return {prefix or NON_FIELD: [str(detail)]}


def _field_name(key, prefix: str) -> str:
    # List items (DRF ListField errors are keyed by index) read `field[0]`.
    if isinstance(key, int):
        return f"{prefix or NON_FIELD}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _flatten_dict(detail: dict, prefix: str) -> dict[str, list[str]]:
    flat: dict[str, list[str]] = {}
    for key, value in detail.items():
        name = _field_name(key, prefix)
        if isinstance(value, dict):
            flat.update(flatten_errors(value, name))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, _NESTED) for v in value):
            _flatten_items(value, name, flat)
        else:
            flat[name] = _messages(value)
    return flat


def _flatten_items(value, name: str, flat: dict[str, list[str]]) -> None:
    """A field's list holding nested errors: each nested one under `name[i]`, each message under `name`."""
    for index, item in enumerate(value):
        if isinstance(item, _NESTED) and item:
            flat.update(flatten_errors(item, f"{name}[{index}]"))
        elif item and not isinstance(item, _NESTED):
            flat.setdefault(name, []).append(str(item))


def _flatten_list(detail, prefix: str) -> dict[str, list[str]]:
    if not any(isinstance(v, _NESTED) for v in detail):
        return {prefix or NON_FIELD: _messages(detail)}
    flat: dict[str, list[str]] = {}
    for index, item in enumerate(detail):
        if item:
            flat.update(flatten_errors(item, f"{prefix}[{index}]" if prefix else f"{NON_FIELD}[{index}]"))
    return flat


def django_validation_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    """A Django ValidationError as `{field: [messages]}` (`__all__` becomes non_field_errors)."""
    if hasattr(exc, "error_dict"):
        return {(NON_FIELD if key == "__all__" else key): list(messages) for key, messages in exc.message_dict.items()}
    return {NON_FIELD: list(exc.messages)}


def invalid_transition_body(exc: InvalidTransition) -> dict:
    return {
        "detail": exc.detail,
        "code": InvalidTransition.code,
        "current_status": exc.current,
        "allowed": list(exc.allowed),
    }


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every exception becomes a JSON response of the contract above."""
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidTransition):
        body, code = invalid_transition_body(exc), status.HTTP_409_CONFLICT
    elif isinstance(exc, Conflict):
        body = {"detail": exc.detail, "code": exc.code, "existing_id": exc.existing_id, "field": exc.field, **exc.extra}
        code = status.HTTP_409_CONFLICT
    elif isinstance(exc, ConcurrentTransition):
        body = {"detail": "The object changed while this request was handled; retry.", "code": Conflict.code}
        code = status.HTTP_409_CONFLICT
    elif isinstance(exc, exceptions.ValidationError):
        body, code = flatten_errors(exc.detail), status.HTTP_400_BAD_REQUEST
    elif isinstance(exc, exceptions.ParseError):
        body, code = {NON_FIELD: [str(exc.detail)]}, status.HTTP_400_BAD_REQUEST
    elif isinstance(exc, DJANGO_ERRORS):
        body, code = _django_error_body(exc)
    elif isinstance(exc, exceptions.APIException):
        body, code = _api_exception_body(exc, headers)
    else:
        request = context.get("request")
        logger.exception(
            "unhandled error in %s %s", getattr(request, "method", "?"), getattr(request, "path", "?"), exc_info=exc
        )
        body, code = {"detail": "Internal server error."}, status.HTTP_500_INTERNAL_SERVER_ERROR
    set_rollback()
    return Response(body, status=code, headers=headers)


# Django's own exceptions a view may meet (RequestDataTooBig: Django's body limit, met when a body is read whole).
DJANGO_ERRORS = (DjangoValidationError, Http404, ObjectDoesNotExist, RequestDataTooBig, DjangoPermissionDenied)


def _django_error_body(exc: Exception) -> tuple[dict, int]:
    """One of `DJANGO_ERRORS` as the contract's body and status."""
    if isinstance(exc, DjangoValidationError):
        return django_validation_errors(exc), status.HTTP_400_BAD_REQUEST
    if isinstance(exc, (Http404, ObjectDoesNotExist)):
        return {"detail": "Not found."}, status.HTTP_404_NOT_FOUND
    if isinstance(exc, RequestDataTooBig):
        return {"detail": str(RequestTooLarge().detail)}, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    return {"detail": str(exc) or exceptions.PermissionDenied.default_detail}, status.HTTP_403_FORBIDDEN


def _api_exception_body(exc: exceptions.APIException, headers: dict[str, str]) -> tuple[dict, int]:
    """DRF's own errors (401/403/404/405/406/415/429...) as `{"detail"}`, with their headers added to `headers`."""
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    detail = exc.detail if not isinstance(exc.detail, (list, dict)) else flatten_errors(exc.detail)
    body = {"detail": detail}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = f"{int(exc.wait)}"
        body["retry_after"] = int(exc.wait)
    return body, exc.status_code
