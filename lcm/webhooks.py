"""The CloudEvents webhook `POST /api/events` (SPEC §5.2).

Authenticated by a shared secret header (constant-time compare); accepts CloudEvents 1.0 in
structured mode (`application/cloudevents+json`, or JSON carrying `specversion`) and binary
mode (`ce-*` headers, the body is `data`); deduplicated by event id; always 202 for a
well-formed, authenticated event, whether it was acted on, unknown or a repeat.
"""

import hmac
import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from lcm import metrics
from lcm.api.parsers import JsonTooDeep, RequestTooLarge, load_json
from lcm.models import ReceivedEvent

logger = logging.getLogger("lcm.webhooks")

SECRET_HEADER = "X-LCM-Webhook-Secret"
REQUIRED = ("id", "type", "source", "specversion")
MAX_BODY_BYTES = 1_000_000


def _error(status: int, payload: dict) -> JsonResponse:
    metrics.count(metrics.CLOUDEVENTS_RECEIVED, "failed" if status >= 500 else "refused")
    return JsonResponse(payload, status=status)


def _binary_event(request, content_type: str) -> tuple[dict | None, dict | None]:
    """Binary mode: the attributes are `ce-*` headers, the body is `data`."""
    event = {key[3:].lower(): value for key, value in request.headers.items() if key.lower().startswith("ce-")}
    body = request.body
    if body and content_type.endswith("json"):
        try:
            event["data"] = load_json(body)
        except JsonTooDeep as exc:
            return None, {"data": [str(exc)]}
        except ValueError:
            return None, {"data": ["is not valid JSON"]}
    elif body:
        event["data"] = body.decode("utf-8", "replace")
    event["datacontenttype"] = content_type
    return event, None


def _structured_event(request) -> tuple[dict | None, dict | None]:
    """Structured mode: the body is the whole CloudEvent as a JSON object."""
    try:
        event = load_json(request.body or b"")
    except JsonTooDeep as exc:
        return None, {"body": [str(exc)]}
    except ValueError:
        return None, {"body": ["is not valid JSON (expected a CloudEvent in structured mode)"]}
    if not isinstance(event, dict):
        return None, {"body": ["must be a JSON object (a CloudEvent)"]}
    return event, None


def parse_event(request) -> tuple[dict | None, dict | None]:
    """(event, None) or (None, field errors) from a structured- or binary-mode request."""
    content_type = (request.content_type or "").lower()
    if "ce-specversion" in {k.lower() for k in request.headers}:
        event, errors = _binary_event(request, content_type)
    else:
        event, errors = _structured_event(request)
    if errors:
        return None, errors
    errors = {name: ["is required"] for name in REQUIRED if not str(event.get(name) or "").strip()}
    if not errors and str(event["specversion"]) != "1.0":
        errors["specversion"] = ["must be 1.0"]
    for name in ("id", "type", "source", "subject"):
        if name in event and not isinstance(event[name], str):
            errors[name] = ["must be a string"]
    return (None, errors) if errors else (event, None)


# (settings name of a type prefix, handler): each app registers the event types it owns in `AppConfig.ready()`.
_HANDLERS: list[tuple[str, Callable[[dict], str]]] = []


def register(prefix_setting: str, handler: Callable[[dict], str]) -> None:
    """Hand events whose type starts with `settings.<prefix_setting>` + "." to `handler` (returns what it did)."""
    if (prefix_setting, handler) not in _HANDLERS:
        _HANDLERS.append((prefix_setting, handler))


def dispatch(event: dict) -> str:
    """Hand the event to the app that owns its type; returns what was done."""
    event_type = event["type"]
    for prefix_setting, handler in _HANDLERS:
        if event_type.startswith(getattr(settings, prefix_setting) + "."):
            return handler(event)
    return "ignored: unknown type"


@csrf_exempt
@require_POST
def events_webhook(request):
    """Receive one CloudEvent."""
    given = request.headers.get(SECRET_HEADER, "")
    if not given or not hmac.compare_digest(given.encode(), settings.WEBHOOK_SECRET.encode()):
        return _error(401, {"detail": f"missing or wrong {SECRET_HEADER} header"})
    try:
        too_large = len(request.body) > MAX_BODY_BYTES
    except RequestDataTooBig:  # over DATA_UPLOAD_MAX_MEMORY_SIZE: Django refuses to read it
        too_large = True
    if too_large:
        return _error(413, {"detail": str(RequestTooLarge(MAX_BODY_BYTES).detail)})
    event, errors = parse_event(request)
    if errors:
        return _error(400, errors)
    try:
        with transaction.atomic():
            record = ReceivedEvent.objects.create(
                event_id=event["id"][:200],
                event_type=event["type"][:200],
                source=event["source"][:500],
                subject=str(event.get("subject") or "")[:200],
            )
    except IntegrityError:
        logger.info("duplicate event %s (%s) acknowledged", event["id"], event["type"])
        metrics.count(metrics.CLOUDEVENTS_RECEIVED, "duplicate")
        return JsonResponse({"id": event["id"], "status": "duplicate"}, status=202)
    try:
        outcome = dispatch(event)
    except Exception:
        # Forget the event so the sender's retry is acted on; the state is unchanged (services are atomic).
        ReceivedEvent.objects.filter(pk=record.pk).delete()
        logger.exception("event %s (%s) could not be handled", event["id"], event["type"])
        return _error(503, {"detail": "the event could not be handled now; retry later"})
    ReceivedEvent.objects.filter(pk=record.pk).update(outcome=outcome[:200])
    logger.info("event %s (%s): %s", event["id"], event["type"], outcome)
    metrics.count(metrics.CLOUDEVENTS_RECEIVED, "accepted")
    return JsonResponse({"id": event["id"], "status": "accepted", "outcome": outcome}, status=202)
