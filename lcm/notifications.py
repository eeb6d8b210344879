"""Notifications (SPEC §11): email and outbound CloudEvents webhooks for what needs a person.

Each app says what it announces (`register_kind`) and which committed status changes do
(`register_trigger(entity, statuses, build)`: `build(change)` returns the `Notice`s of one change, reading
what it needs). After a transition commits, `on_changes_committed` builds the notices and records one
`NotificationDelivery` per subscribed destination (enabled email recipients and webhooks whose
`event_kinds` include the kind, or are empty), then enqueues each delivery on the `notifications` loop:
a Celery task when a broker is configured, the in-process pool otherwise. Nothing here can delay or
undo the transition: it has committed already, the deliveries run elsewhere, and a failure is logged.

A delivery pass (`deliver`) sends once: a failure is retried with exponential backoff
(`LCM_NOTIFY_BACKOFF_SECONDS`, doubled per attempt) up to `LCM_NOTIFY_MAX_ATTEMPTS`, then FAILED; the
loop's tick picks up every delivery that is due, so a retry survives a restart. A notice's event id is
derived from what happened (`Notice.key`), and a destination gets one delivery per event id, so the same
thing announced twice is delivered once; a receiver deduplicates retries by that id too.

Webhooks get a structured-mode CloudEvent (`application/cloudevents+json`, type `io.lablet.lcm.<kind>`)
signed with the endpoint's secret: header `X-LCM-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
HMAC-SHA256(secret, `<t>.<raw body>`). A receiver recomputes it over the exact bytes received and
refuses a `t` too far from its clock (replay protection; each attempt is signed afresh).
"""

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db.models import Q
from django.utils import timezone

import lcm
from lcm import loops, metrics
from lcm.events import changes_committed
from lcm.http import ExternalError, HttpClient, Timeouts, call_outcome
from lcm.models import DeliveryStatus, EmailRecipient, NotificationChannel, NotificationDelivery, WebhookEndpoint
from lcm.reconcile import Result

logger = logging.getLogger("lcm.notifications")

LOOP = "notifications"
TYPE_PREFIX = "io.lablet.lcm."
SIGNATURE_HEADER = "X-LCM-Signature"
BACKOFF_CAP_SECONDS = 3600.0
_EVENT_NAMESPACE = uuid.UUID("6c1d6b0e-8a61-4c55-9a53-4a6a1c3f0e17")


@dataclass(frozen=True)
class Notice:
    """Something to tell: its kind (`session.failed`), the CloudEvent subject, a one-line summary (the email's
    subject), JSON data, the page that shows it, and `key`: what makes it one event (its id derives from it)."""

    kind: str
    subject: str
    summary: str
    key: str
    data: dict = field(default_factory=dict)
    link: str = ""


# kind → what it means (the admin's choices); entity → [(statuses, build)].
KINDS: dict[str, str] = {}
_TRIGGERS: dict[str, list[tuple[frozenset, Callable[[dict], list[Notice]]]]] = {}


def register_kind(kind: str, description: str) -> None:
    KINDS[kind] = description


def register_trigger(entity: str, statuses, build: Callable[[dict], list[Notice]]) -> None:
    """`build(change)` is called after commit for a change of `entity` into one of `statuses` (a real move)."""
    triggers = _TRIGGERS.setdefault(entity, [])
    entry = (frozenset(statuses), build)
    if entry not in triggers:
        triggers.append(entry)


# --- from a committed change to deliveries ---------------------------------------------------------------


def on_changes_committed(sender, *, changes, **kwargs) -> None:
    """The after-commit listener: notices of the changes that trigger any, recorded and sent on their way."""
    matched = [
        (build, change)
        for change in changes
        if change["from_status"] != change["to_status"]
        for statuses, build in _TRIGGERS.get(change["entity"], ())
        if change["to_status"] in statuses
    ]
    if not matched or not listening():
        return
    for build, change in matched:
        try:
            notify(build(change))
        except Exception:  # a notification is never worth failing the caller for
            logger.exception("could not notify %s %s -> %s", change["entity"], change["id"], change["to_status"])


def listening() -> bool:
    return EmailRecipient.objects.filter(enabled=True).exists() or WebhookEndpoint.objects.filter(enabled=True).exists()


def event_of(notice: Notice) -> dict:
    """The CloudEvent (structured mode) a notice is delivered as."""
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid5(_EVENT_NAMESPACE, notice.key)),
        "source": settings.LCM_NOTIFY_SOURCE,
        "type": TYPE_PREFIX + notice.kind,
        "subject": notice.subject,
        "time": timezone.now().isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {"summary": notice.summary, "link": _absolute(notice.link), **notice.data},
    }


def _subscribed(rows, kind: str) -> list:
    return [row for row in rows if not row.event_kinds or kind in row.event_kinds]


def notify(notices: list[Notice]) -> list[int]:
    """Record a delivery of each notice to each subscribed destination and enqueue it; returns the ids enqueued."""
    recipients = list(EmailRecipient.objects.filter(enabled=True))
    webhooks = list(WebhookEndpoint.objects.filter(enabled=True))
    rows = []
    for notice in notices:
        event = event_of(notice)
        common = {"event_id": event["id"], "event_type": event["type"], "subject": notice.subject[:200], "event": event}
        rows += [
            NotificationDelivery(channel=NotificationChannel.EMAIL, recipient=r, target=r.email, **common)
            for r in _subscribed(recipients, notice.kind)
        ]
        rows += [
            NotificationDelivery(channel=NotificationChannel.WEBHOOK, webhook=w, target=w.url[:500], **common)
            for w in _subscribed(webhooks, notice.kind)
        ]
    if not rows:
        return []
    NotificationDelivery.objects.bulk_create(rows, ignore_conflicts=True)  # one per event and destination
    ids = list(
        NotificationDelivery.objects.filter(
            event_id__in={row.event_id for row in rows}, status=DeliveryStatus.PENDING, attempts=0
        ).values_list("pk", flat=True)
    )
    for pk in ids:
        loops.enqueue(LOOP, pk)
    return ids


# --- the notifications loop: deliver, retry ----------------------------------------------------------------


def due_deliveries() -> list[int]:
    """The loop's tick: deliveries waiting whose (re)try is due, oldest first."""
    now = timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    rows = NotificationDelivery.objects.filter(due, status=DeliveryStatus.PENDING).order_by("created_at")
    return list(rows.values_list("pk", flat=True)[:500])


def deliver(delivery_id) -> Result:
    """One pass for one delivery: send it once; on failure record the attempt and when to retry."""
    row = NotificationDelivery.objects.select_related("recipient", "webhook").filter(pk=delivery_id).first()
    if row is None or row.status != DeliveryStatus.PENDING:
        return Result.done("nothing to do")
    now = timezone.now()
    if row.next_attempt_at and row.next_attempt_at > now:
        return Result.requeue((row.next_attempt_at - now).total_seconds(), "backing off")
    destination = row.recipient if row.channel == NotificationChannel.EMAIL else row.webhook
    if destination is None or not destination.enabled:
        _finish(row, DeliveryStatus.FAILED, error="the destination was disabled or removed")
        return Result.done("destination gone")
    started = time.monotonic()
    try:
        if row.channel == NotificationChannel.EMAIL:
            send_email(row.recipient.email, row.event)
        else:
            post_webhook(row.webhook.url, row.webhook.secret, row.event)
    except Exception as exc:
        return _failed(row, exc, time.monotonic() - started)
    _finish(row, DeliveryStatus.DELIVERED)
    metrics.count(metrics.NOTIFICATIONS, row.channel, "delivered")
    logger.info("notification %s delivered to %s by %s", row.event_type, row.target, row.channel)
    return Result.done("delivered")


def _failed(row: NotificationDelivery, exc: Exception, seconds: float) -> Result:
    error = f"{exc.__class__.__name__}: {exc}"[:1000]
    if row.channel == NotificationChannel.EMAIL:  # a webhook call is counted by the HTTP client base
        metrics.observe_call("smtp", "send", call_outcome(exc), seconds)
    attempts = row.attempts + 1
    if attempts >= settings.LCM_NOTIFY_MAX_ATTEMPTS:
        _finish(row, DeliveryStatus.FAILED, error=error, attempts=attempts)
        metrics.count(metrics.NOTIFICATIONS, row.channel, "failed")
        logger.warning(
            "notification %s to %s given up after %d attempts: %s", row.event_type, row.target, attempts, error
        )
        return Result.done("given up")
    delay = retry_delay(attempts)
    NotificationDelivery.objects.filter(pk=row.pk, status=DeliveryStatus.PENDING).update(
        attempts=attempts, last_error=error, next_attempt_at=timezone.now() + timedelta(seconds=delay)
    )
    metrics.count(metrics.NOTIFICATIONS, row.channel, "retry")
    logger.info("notification %s to %s failed (attempt %d), retry in %.0f s: %s", row.event_type, row.target,
                attempts, delay, error)  # fmt: skip
    return Result.requeue(delay, "retry later")


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: the base, doubled each time, capped."""
    return min(BACKOFF_CAP_SECONDS, settings.LCM_NOTIFY_BACKOFF_SECONDS * 2 ** max(0, attempts - 1))


def _finish(row: NotificationDelivery, status: str, *, error: str = "", attempts: int | None = None) -> None:
    fields = {"status": status, "attempts": row.attempts + 1 if attempts is None else attempts, "next_attempt_at": None}
    if status == DeliveryStatus.DELIVERED:
        fields["delivered_at"] = timezone.now()
    if error:
        fields["last_error"] = error
    NotificationDelivery.objects.filter(pk=row.pk, status=DeliveryStatus.PENDING).update(**fields)


def record_error(delivery_id, exc) -> float | None:
    """`on_error` of the loop: a pass that crashed outside a send (the database, say) is retried by the tick."""
    logger.warning("notification delivery %s: %s", delivery_id, exc)
    return settings.LCM_NOTIFY_BACKOFF_SECONDS


def delivery_retry(row: NotificationDelivery) -> NotificationDelivery:
    """Try a delivery again now, with a fresh allowance of attempts (the admin's "Retry now")."""
    NotificationDelivery.objects.filter(pk=row.pk).exclude(status=DeliveryStatus.DELIVERED).update(
        status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=None
    )
    loops.enqueue(LOOP, row.pk)
    return row


def send_test(destination) -> list[int]:
    """A `test` notice to one recipient or webhook (the admin's "Send a test notification")."""
    notice = Notice(
        kind="test",
        subject="lcm",
        summary="Test notification from LCM",
        key=f"test:{uuid.uuid4()}",
        data={"destination": str(destination)},
    )
    event = event_of(notice)
    is_email = isinstance(destination, EmailRecipient)
    row = NotificationDelivery.objects.create(
        event_id=event["id"],
        event_type=event["type"],
        subject=notice.subject,
        channel=NotificationChannel.EMAIL if is_email else NotificationChannel.WEBHOOK,
        recipient=destination if is_email else None,
        webhook=None if is_email else destination,
        target=destination.email if is_email else destination.url[:500],
        event=event,
    )
    loops.enqueue(LOOP, row.pk)
    return [row.pk]


# --- the channels ------------------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-LCM-Signature` value: `t=<timestamp>,v1=<HMAC-SHA256(secret, "<timestamp>." + body) in hex>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None):
    """What a receiver does (documented, and used by the tests): True when `header` signs `body` with `secret`
    at a time within `tolerance` seconds of `now`."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}")


class _WebhookClient(HttpClient):
    """POSTs to exactly the configured URL (no path joined, no trailing slash removed); retries are the loop's."""

    system = "webhook"

    def __init__(self, url: str):
        timeout = settings.LCM_NOTIFY_TIMEOUT_SECONDS
        super().__init__(url, timeouts=Timeouts(connect=min(3.05, timeout), read=timeout), retries=0)
        self.target = url

    def url(self, path: str) -> str:
        return self.target


def post_webhook(url: str, secret: str, event: dict) -> None:
    """POST the CloudEvent, signed; raises an `ExternalError` on anything but a 2xx."""
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/cloudevents+json; charset=utf-8",
        "User-Agent": f"LCM/{lcm.__version__} notifications",
        SIGNATURE_HEADER: signature(secret, int(time.time()), body),
    }
    response = _WebhookClient(url).request("POST", "", operation="deliver", data=body, headers=headers)
    if response.status_code >= 300:
        raise ExternalError("webhook", "deliver", f"answered {response.status_code}", response.status_code)


def send_email(address: str, event: dict) -> None:
    """Send the event as a plain-text email through Django's email backend (`EMAIL_*` settings)."""
    data = dict(event.get("data") or {})
    summary = data.pop("summary", event["type"])
    link = data.pop("link", "")
    lines = [summary, ""]
    if link:
        lines += [f"Open: {link}", ""]
    lines += [f"{key}: {value}" for key, value in data.items() if value not in (None, "")]
    lines += ["", f"Event {event['type']} ({event['id']}) at {event['time']}."]
    message = EmailMessage(subject=f"[LCM] {summary}"[:200], body="\n".join(lines), to=[address])
    message.extra_headers["X-LCM-Event-Id"] = event["id"]
    started = time.monotonic()
    message.send(fail_silently=False)
    metrics.observe_call("smtp", "send", "ok", time.monotonic() - started)


def _absolute(link: str) -> str:
    return f"{settings.LCM_PUBLIC_URL.rstrip('/')}{link}" if link.startswith("/") else link


def connect() -> None:
    changes_committed.connect(on_changes_committed, dispatch_uid="lcm.notifications")


def disconnect() -> None:
    changes_committed.disconnect(dispatch_uid="lcm.notifications")
