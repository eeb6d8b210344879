"""The CloudEvents webhook: secret, structured and binary modes, dedup, dispatch to LDS and grading handlers."""

import json
import uuid

import pytest

from grading.models import GradingSession
from lcm.models import ReceivedEvent
from tests.factories import GradingSessionFactory, UserSessionFactory, WorkerFactory

pytestmark = pytest.mark.django_db
URL = "/api/events"


def _event(event_type, data, subject="", event_id=None):
    return {
        "specversion": "1.0",
        "id": event_id or uuid.uuid4().hex,
        "type": event_type,
        "source": "/lds",
        "subject": subject,
        "data": data,
    }


def _post(client, event, secret="local-webhook-secret", content_type="application/cloudevents+json"):
    headers = {"X-LCM-Webhook-Secret": secret} if secret is not None else {}
    return client.post(URL, data=json.dumps(event), content_type=content_type, headers=headers)


def test_secret_is_required(client):
    event = _event("io.lablet.lds.session.running.v1", {})
    assert _post(client, event, secret=None).status_code == 401
    assert _post(client, event, secret="wrong").status_code == 401
    assert not ReceivedEvent.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [("not json", "body"), ("[1, 2]", "body"), ('{"specversion": "1.0", "type": "x", "source": "s"}', "id")],
)
def test_malformed_events_are_400_naming_the_field(client, body, field):
    response = client.post(
        URL, data=body, content_type="application/json", headers={"X-LCM-Webhook-Secret": "local-webhook-secret"}
    )
    assert response.status_code == 400
    assert field in response.json()


def test_lds_running_event_starts_a_ready_session_once(client):
    user_session = UserSessionFactory(
        lablet_session__status="READY", lablet_session__worker=WorkerFactory(), status="PROVISIONED"
    )
    event = _event("io.lablet.lds.session.running.v1", {"sessionId": user_session.lds_session_id})
    first = _post(client, event)
    assert first.status_code == 202 and first.json()["outcome"] == "session running"
    session = user_session.lablet_session
    session.refresh_from_db()
    user_session.refresh_from_db()
    assert session.status == "RUNNING" and user_session.status == "ACTIVE"
    again = _post(client, event)
    assert again.status_code == 202 and again.json()["status"] == "duplicate"
    assert session.history.filter(to_status="RUNNING").count() == 1


def test_binary_mode_ended_event_moves_running_to_collecting(client):
    user_session = UserSessionFactory(
        lablet_session__status="RUNNING", lablet_session__worker=WorkerFactory(), status="ACTIVE"
    )
    response = client.post(
        URL,
        data=json.dumps({"reason": "finished"}),
        content_type="application/json",
        headers={
            "X-LCM-Webhook-Secret": "local-webhook-secret",
            "ce-specversion": "1.0",
            "ce-id": "evt-1",
            "ce-type": "io.lablet.lds.session.ended.v1",
            "ce-source": "/lds",
            "ce-subject": user_session.lds_session_id,
        },
    )
    assert response.status_code == 202, response.content
    user_session.lablet_session.refresh_from_db()
    assert user_session.lablet_session.status == "COLLECTING"


def test_unknown_types_and_sessions_are_acknowledged_and_change_nothing(client):
    assert _post(client, _event("com.example.other", {})).json()["outcome"] == "ignored: unknown type"
    unknown = _post(client, _event("io.lablet.lds.session.running.v1", {"sessionId": "nope"}))
    assert unknown.status_code == 202 and unknown.json()["outcome"] == "ignored: unknown LDS session"


def test_grading_failed_event_faults_the_grading_session(client):
    grading = GradingSessionFactory(lablet_session__status="GRADING", grading_session_id="ge-1", status="GRADING")
    event = _event("io.lablet.grading.session.failed", {"gradingSessionId": "ge-1", "error": "collector down"})
    assert _post(client, event).status_code == 202
    grading = GradingSession.objects.get(pk=grading.pk)
    assert grading.status == "FAULTED" and "collector down" in grading.error_message
