"""Many clients move one session at once over real HTTP (SPEC §6.2): exactly one wins, the rest get 409."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from lcm.api.tokens import token_create
from sessions.models import LabletSession, SessionStatusChange
from tests.factories import SessionFactory, WorkerFactory

CLIENTS = 50


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_transitions_one_winner(live_server, django_user_model):
    user = django_user_model.objects.create_user("race-admin", is_staff=True)
    key = token_create(user, actor="test").key
    session = SessionFactory(status="READY", worker=WorkerFactory())
    url = f"{live_server.url}/api/v1/sessions/{session.pk}/transition"
    start = threading.Barrier(CLIENTS)

    def attempt(index):
        with requests.Session() as http:
            start.wait(timeout=30)
            response = http.post(
                url,
                json={"status": "RUNNING", "reason": f"client {index}"},
                headers={"Authorization": f"Token {key}"},
                timeout=60,
            )
            return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = list(pool.map(attempt, range(CLIENTS)))

    codes = sorted(code for code, _ in results)
    assert codes.count(200) == 1, codes
    assert codes.count(409) == CLIENTS - 1, codes
    for code, body in results:
        if code == 409:
            assert body["code"] == "invalid_transition"
            assert body["current_status"] == "RUNNING"
            assert body["allowed"] == ["COLLECTING", "EXPIRED", "STOPPING", "TERMINATED"]
    assert LabletSession.objects.get(pk=session.pk).status == "RUNNING"
    assert SessionStatusChange.objects.filter(session=session, to_status="RUNNING").count() == 1
