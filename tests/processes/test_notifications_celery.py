"""Notifications through the production process set, and one request followed across processes (SPEC §11).

An instructor terminates a session through gunicorn's REST API with `X-Request-ID: trace-…`. The transition
commits in the web process, which records the notification and publishes its delivery to Celery; a Celery
worker process POSTs the signed CloudEvent to a receiver in this test. The request id travels with the task
(a message header), so the worker's log line of that delivery carries the same id as the web request and the
session's history row.
"""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from lcm import notifications
from lcm.api.tokens import token_create
from lcm.models import NotificationDelivery, WebhookEndpoint
from lcm.tools.processes import free_ports
from sessions.models import SessionStatusChange
from tests.support.processes import log_tails
from tests.support.waiting import wait_until

SECRET = "a-shared-secret-of-some-length"


@pytest.fixture
def receiver():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's hook name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            signed = notifications.verify_signature(SECRET, self.headers.get("X-LCM-Signature", ""), body)
            received.append({"event": json.loads(body), "signed": signed})
            self.send_response(200 if signed else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_ports(1)[0]), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/lcm-events", received
    server.shutdown()
    server.server_close()


@pytest.mark.django_db(transaction=True)
def test_a_web_request_is_delivered_by_a_celery_worker_that_logs_its_request_id(start_stack, receiver, admin_user):
    url, received = receiver
    stack, rig = start_stack()
    WebhookEndpoint.objects.create(name="ops", url=url, secret=SECRET, event_kinds=["session.ended"])
    definition = rig.definition()
    session_id = rig.book(definition, 1)[0]
    key = token_create(admin_user, actor="test").key
    trace = f"trace-{uuid.uuid4().hex[:12]}"

    answer = requests.delete(
        f"{stack.urls['web']}/api/v1/sessions/{session_id}/",
        json={"reason": "booked by mistake"},
        headers={"Authorization": f"Token {key}", "X-Request-ID": trace},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Request-ID"] == trace

    wait_until(lambda: len(received) == 1, timeout=30, what="the webhook delivery by the Celery worker",
               details=lambda: f"{list(NotificationDelivery.objects.values())}\n{log_tails(stack)}")  # fmt: skip
    assert received[0]["signed"] and received[0]["event"]["type"] == "io.lablet.lcm.session.ended"
    assert received[0]["event"]["data"]["reason"] == "booked by mistake"
    row = SessionStatusChange.objects.get(session_id=session_id, to_status="TERMINATED")
    assert row.request_id == trace
    wait_until(lambda: trace in stack.log_tail("worker", 400), timeout=10, what="the worker's log line")
    worker_lines = [line for line in stack.log_tail("worker", 400).splitlines() if trace in line]
    assert any("notification io.lablet.lcm.session.ended delivered" in line for line in worker_lines), worker_lines
    assert any(trace in line for line in stack.log_tail("web", 400).splitlines())
