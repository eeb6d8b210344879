"""Shared by the LDS and Grading Engine simulator tests: a webhook receiver for their CloudEvents."""

import time

import pytest
from flask import Flask, request

from simulators.common import ServerThread


class Capture:
    """A webhook receiver: keeps every POSTed CloudEvent with its headers and answers 202."""

    def __init__(self):
        self.received: list[dict] = []
        self.app = Flask("capture")

        @self.app.post("/events")
        def receive():
            self.received.append(
                {"headers": dict(request.headers), "content_type": request.content_type, "event": request.get_json()}
            )
            return "", 202

    def events(self, subject: str, type_suffix: str = "") -> list[dict]:
        return [
            r["event"]
            for r in self.received
            if r["event"]["subject"] == subject and r["event"]["type"].endswith(type_suffix)
        ]

    def wait(self, subject: str, type_suffix: str, count: int = 1, timeout: float = 2.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events(subject, type_suffix)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.events(subject, type_suffix)


@pytest.fixture(scope="module")
def capture():
    receiver = Capture()
    server = ServerThread(receiver.app).start()
    receiver.url = f"{server.url}/events"
    yield receiver
    server.stop()
