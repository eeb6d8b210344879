"""Notifications (SPEC §11) end to end on loopback: a real SMTP server (aiosmtpd) and a real HTTP receiver that
verifies the HMAC-SHA256 signature; deliveries run on the in-process pool of the embedded default (the same
reconcile pass a Celery worker runs), after the transition has committed.

- a session that ends FAILED and a worker that goes FAILED each produce exactly one email and one signed
  webhook delivery;
- with the receiver down, a delivery is retried with backoff and delivered once it is back, while the
  transition itself returned at once (a receiver that holds the request open does not hold the caller).
"""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from lcm import loops, notifications
from lcm.models import DeliveryStatus, EmailRecipient, NotificationDelivery, WebhookEndpoint
from lcm.tools.processes import free_ports
from sessions.models import LabletSession
from sessions.services import session_terminate
from tests.factories import SessionFactory, WorkerFactory
from tests.support.waiting import wait_until
from workers.services import worker_transition

SECRET = "a-shared-secret-of-some-length"

pytestmark = pytest.mark.django_db(transaction=True)


class _Mailbox:
    """aiosmtpd handler: keeps every message it is handed."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append({"to": envelope.rcpt_tos, "body": envelope.content.decode("utf-8", "replace")})
        return "250 OK"


@pytest.fixture
def smtp(settings):
    mailbox = _Mailbox()
    port = free_ports(1)[0]
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_TIMEOUT = 5
    yield mailbox
    controller.stop()


class Receiver:
    """An HTTP server on loopback that records each POST and whether its X-LCM-Signature verifies.
    `hold` makes it keep each request open until released (a slow receiver)."""

    def __init__(self, port: int, *, hold: threading.Event | None = None):
        self.port, self.hold, self.deliveries = port, hold, []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's hook name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                signed = notifications.verify_signature(SECRET, self.headers.get("X-LCM-Signature", ""), body)
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                receiver.deliveries.append({"event": json.loads(body), "signed": signed,
                                            "type": self.headers.get("Content-Type")})  # fmt: skip
                self.send_response(204 if signed else 401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/lcm"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    started = []

    def start(port=None, **kwargs):
        receiver = Receiver(port or free_ports(1)[0], **kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        if receiver.hold is not None:
            receiver.hold.set()
        receiver.stop()


@pytest.fixture
def pool(settings):
    """The in-process pool runs the notification passes (as in the embedded default); idle at teardown."""
    settings.LCM_INPROCESS_WORKERS = 2
    settings.CELERY_BROKER_URL = ""
    settings.LCM_NOTIFY_BACKOFF_SECONDS = 0.2
    yield
    assert loops.quiesce(timeout=30)


def subscribe(url: str):
    EmailRecipient.objects.create(email="ops@example.com", name="Ops")
    WebhookEndpoint.objects.create(name="pager", url=url, secret=SECRET)


def test_a_failed_session_and_a_failed_worker_each_send_one_email_and_one_signed_webhook(smtp, receivers, pool):
    receiver = receivers()
    subscribe(receiver.url)
    worker = WorkerFactory(name="worker-x")
    session = SessionFactory(status="RUNNING", worker=worker, owner="cand@example.com")

    session_terminate(session, actor="lablets", reason="gave up after 8 attempts", end_reason="FAILED")
    worker_transition(worker, "FAILED", actor="workers", reason="CML never became ready")

    rows = lambda: list(NotificationDelivery.objects.values("event_type", "target", "status", "last_error"))  # noqa: E731
    wait_until(
        lambda: len(smtp.messages) == 2 and len(receiver.deliveries) == 2,
        timeout=20,
        what="two emails and two webhook deliveries",
        details=lambda: f"{smtp.messages} {receiver.deliveries} {rows()}",
    )
    assert loops.quiesce(timeout=20)
    assert len(smtp.messages) == 2 and len(receiver.deliveries) == 2  # exactly one of each per event

    events = {d["event"]["type"]: d for d in receiver.deliveries}
    assert set(events) == {"io.lablet.lcm.session.failed", "io.lablet.lcm.worker.failed"}
    assert all(d["signed"] for d in receiver.deliveries)
    assert all(d["type"].startswith("application/cloudevents+json") for d in receiver.deliveries)
    failed_session = events["io.lablet.lcm.session.failed"]["event"]
    assert failed_session["specversion"] == "1.0" and failed_session["subject"] == f"sessions/{session.pk}"
    assert failed_session["data"]["owner"] == "cand@example.com"
    assert failed_session["data"]["end_reason"] == "FAILED"
    assert events["io.lablet.lcm.worker.failed"]["event"]["data"]["name"] == "worker-x"
    bodies = "\n".join(m["body"] for m in smtp.messages)
    assert "Subject: [LCM] Session of cand@example.com" in bodies and "failed" in bodies
    assert "Subject: [LCM] Worker worker-x FAILED: CML never became ready" in bodies
    assert all(m["to"] == ["ops@example.com"] for m in smtp.messages)
    assert set(NotificationDelivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}

    # Announcing the same end again (a repeated after-commit announcement) delivers nothing more.
    notifications.on_changes_committed(
        "lcm",
        changes=[
            {
                "entity": "session",
                "id": str(session.pk),
                "from_status": "RUNNING",
                "to_status": "TERMINATED",
                "actor": "x",
                "reason": "",
            }
        ],  # fmt: skip
    )
    assert loops.quiesce(timeout=20)
    assert NotificationDelivery.objects.count() == 4 and len(receiver.deliveries) == 2


def test_a_session_that_ends_normally_is_one_session_ended_event_for_subscribers_of_that_kind(smtp, receivers, pool):
    receiver = receivers()
    WebhookEndpoint.objects.create(name="ends", url=receiver.url, secret=SECRET, event_kinds=["session.ended"])
    EmailRecipient.objects.create(email="workers-only@example.com", event_kinds=["worker.failed"])
    session = SessionFactory(status="RUNNING", worker=WorkerFactory())

    session_terminate(session, actor="instructor", reason="candidate left")

    wait_until(lambda: len(receiver.deliveries) == 1, timeout=20, what="one session.ended delivery")
    assert loops.quiesce(timeout=20)
    assert receiver.deliveries[0]["event"]["type"] == "io.lablet.lcm.session.ended"
    assert receiver.deliveries[0]["event"]["data"]["end_reason"] == "TERMINATED"
    assert smtp.messages == []  # that recipient subscribes to worker failures only


def test_with_the_receiver_down_deliveries_retry_and_the_transition_is_not_held(smtp, receivers, pool):
    port = free_ports(1)[0]
    WebhookEndpoint.objects.create(name="down", url=f"http://127.0.0.1:{port}/hooks/lcm", secret=SECRET)
    session = SessionFactory(status="RUNNING", worker=WorkerFactory())

    session_terminate(session, actor="lablets", reason="gave up", end_reason="FAILED")
    session.refresh_from_db()
    assert session.status == "TERMINATED"  # committed, whatever the receiver does

    delivery = lambda: NotificationDelivery.objects.get()  # noqa: E731
    wait_until(lambda: delivery().attempts >= 2, timeout=20, what="the delivery retried",
               details=lambda: str(list(NotificationDelivery.objects.values())))  # fmt: skip
    row = delivery()
    assert row.status == DeliveryStatus.PENDING and "cannot connect" in row.last_error and row.next_attempt_at

    receiver = receivers(port)  # the receiver comes back: the next retry goes through
    wait_until(lambda: delivery().status == DeliveryStatus.DELIVERED, timeout=30, what="delivered after retries")
    assert loops.quiesce(timeout=20)
    assert len(receiver.deliveries) == 1 and receiver.deliveries[0]["signed"]

    # A receiver that holds the request open: the transition that triggers it returns all the same.
    hold = threading.Event()
    slow = receivers(hold=hold)
    WebhookEndpoint.objects.filter(name="down").update(enabled=False)
    WebhookEndpoint.objects.create(name="slow", url=slow.url, secret=SECRET)
    worker = WorkerFactory(name="worker-slow")
    worker_transition(worker, "FAILED", actor="workers", reason="instance lost")
    assert slow.arrived.wait(20)  # the delivery is in the receiver's hands ...
    assert not hold.is_set() and slow.deliveries == []  # ... still unanswered, and the caller has long returned
    worker.refresh_from_db()
    assert worker.status == "FAILED"
    hold.set()
    wait_until(lambda: len(slow.deliveries) == 1, timeout=20, what="the slow receiver's answer")


def test_the_signature_covers_body_and_time():
    body = b'{"id":"1"}'
    header = notifications.signature(SECRET, 1_700_000_000, body)
    assert notifications.verify_signature(SECRET, header, body, now=1_700_000_100)
    assert not notifications.verify_signature(SECRET, header, body + b" ", now=1_700_000_100)  # body changed
    assert not notifications.verify_signature("another-secret-entirely", header, body, now=1_700_000_100)
    assert not notifications.verify_signature(SECRET, header, body, now=1_700_000_000 + 301)  # a replay, too late
    assert not notifications.verify_signature(SECRET, "garbage", body)


@pytest.mark.django_db(transaction=False)
def test_admins_configure_webhooks_with_a_write_only_secret_and_event_kinds(admin_client):
    add = "/admin/lcm/webhookendpoint/add/"
    page = admin_client.get(add).content.decode()
    assert "session.failed" in page and "worker.failed" in page and "grading.faulted" in page
    refused = admin_client.post(add, {"name": "pager", "url": "https://hooks.example/lcm", "enabled": "on"})
    assert refused.status_code == 200 and "A new webhook needs a secret." in refused.content.decode()
    created = admin_client.post(
        add,
        {
            "name": "pager",
            "url": "https://hooks.example/lcm",
            "secret": SECRET,
            "enabled": "on",
            "event_kinds": ["session.failed", "worker.failed"],
        },  # fmt: skip
    )
    assert created.status_code == 302, created.content.decode()[:2000]
    hook = WebhookEndpoint.objects.get(name="pager")
    assert hook.secret == SECRET and hook.event_kinds == ["session.failed", "worker.failed"]
    change = f"/admin/lcm/webhookendpoint/{hook.pk}/change/"
    assert SECRET not in admin_client.get(change).content.decode()  # never shown again
    kept = admin_client.post(change, {"name": "pager", "url": "https://hooks.example/v2", "enabled": "on"})
    assert kept.status_code == 302
    hook.refresh_from_db()
    assert (hook.url, hook.secret, hook.event_kinds) == ("https://hooks.example/v2", SECRET, [])

    # "Send a test notification" records a delivery of an io.lablet.lcm.test event for that webhook.
    admin_client.post("/admin/lcm/webhookendpoint/", {"action": "send_test", "_selected_action": [hook.pk]})
    delivery = NotificationDelivery.objects.get(webhook=hook)
    assert delivery.event_type == "io.lablet.lcm.test" and delivery.status == DeliveryStatus.PENDING
    assert admin_client.get("/admin/lcm/notificationdelivery/").status_code == 200
    assert admin_client.get("/admin/lcm/emailrecipient/add/").status_code == 200


def test_needs_attention_items_are_announced_once_per_episode_grouped_per_kind(smtp, receivers, pool):
    """SPEC §11: attention items reach the recipients; the `attention` loop's tick announces each new one once."""
    # Imported here: the loop's tick and the heartbeat model are what this test drives.
    from django.utils import timezone

    from lcm.loops import LOOPS
    from lcm.models import AttentionNotice, LoopHeartbeat
    from scheduling.attention_notices import announce_attention
    from tests.factories import DefinitionFactory

    receiver = receivers()
    subscribe(receiver.url)
    for name in LOOPS:  # every loop fresh: no stale_loop items
        LoopHeartbeat.objects.create(name=name, last_tick_at=timezone.now(), ticks=1)
    worker = WorkerFactory(name="mute-1", status="RUNNING", service_status="UNREACHABLE", cpu_cores=4)
    drifted = SessionFactory(status="READY", worker=worker, owner="drift@example.com")
    LabletSession.objects.filter(pk=drifted.pk).update(degraded_at=timezone.now(), degraded_reason="lab gone")
    huge = DefinitionFactory(cpu_cores=512)
    start = timezone.now() + timedelta(minutes=10)
    for n in range(3):
        SessionFactory(status="PENDING", definition=huge, owner=f"c{n}@example.com", worker=None,
                       timeslot_start=start, timeslot_end=start + timedelta(hours=1))  # fmt: skip

    assert announce_attention() == 3  # drift, worker_unreachable, and one notice for the three unplaceable
    wait_until(lambda: len(receiver.deliveries) == 3 and len(smtp.messages) == 3, timeout=20, what="3 + 3 deliveries")
    events = {d["event"]["type"]: d["event"] for d in receiver.deliveries}
    assert set(events) == {
        "io.lablet.lcm.attention.drift", "io.lablet.lcm.attention.worker_unreachable",
        "io.lablet.lcm.attention.unplaceable",
    }  # fmt: skip
    assert all(d["signed"] for d in receiver.deliveries)
    assert events["io.lablet.lcm.attention.unplaceable"]["data"]["count"] == 3
    assert "not placeable" in events["io.lablet.lcm.attention.unplaceable"]["data"]["summary"]
    assert events["io.lablet.lcm.attention.drift"]["subject"] == f"session/{drifted.pk}"
    assert "lab gone" in events["io.lablet.lcm.attention.drift"]["data"]["summary"]
    assert any("mute-1" in m["body"] and "does not answer" in m["body"] for m in smtp.messages)

    # The next ticks announce nothing more while the same items stand.
    assert announce_attention() == 0 and announce_attention() == 0
    assert loops.quiesce(timeout=20)
    assert len(receiver.deliveries) == 3 and AttentionNotice.objects.count() == 5

    # The drift is repaired, then the lab goes again: a new episode, announced again.
    LabletSession.objects.filter(pk=drifted.pk).update(degraded_at=None, degraded_reason="")
    assert announce_attention() == 0
    LabletSession.objects.filter(pk=drifted.pk).update(
        degraded_at=timezone.now() + timedelta(seconds=1), degraded_reason="lab stopped"
    )
    assert announce_attention() == 1
    wait_until(lambda: len(receiver.deliveries) == 4, timeout=20, what="the second drift episode")
    assert "lab stopped" in receiver.deliveries[-1]["event"]["data"]["summary"]


def test_nothing_is_read_or_remembered_for_attention_when_nobody_listens(django_assert_num_queries):
    # Imported here: the loop's tick is what this test drives.
    from lcm.models import AttentionNotice
    from scheduling.attention_notices import announce_attention

    SessionFactory(status="READY", owner="x@example.com")
    with django_assert_num_queries(2):  # is any recipient or webhook enabled? no: done
        assert announce_attention() == 0
    assert not AttentionNotice.objects.exists()
