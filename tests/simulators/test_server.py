"""The simulators' HTTP server keeps connections alive like the real systems, and a stop closes them."""

import socket

import requests
from flask import Flask, request

from simulators.common import ServerThread


def _app() -> Flask:
    app = Flask("echo")

    @app.post("/echo")
    def echo():
        return {"body": request.get_data(as_text=True)}

    @app.post("/ignore")
    def ignore():  # leaves the request body unread
        return {"ok": True}

    return app


def _connects(monkeypatch) -> list:
    made = []
    original = socket.socket.connect

    def connect(sock, address):
        made.append(address)
        return original(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return made


def test_one_connection_serves_many_requests_even_when_a_body_is_left_unread(monkeypatch):
    server = ServerThread(_app()).start()
    try:
        made = _connects(monkeypatch)
        with requests.Session() as http:
            for index in range(5):
                assert http.post(f"{server.url}/ignore", data="x" * 5000, timeout=5).json() == {"ok": True}
                answer = http.post(f"{server.url}/echo", data=f"body {index}", timeout=5)
                assert answer.json() == {"body": f"body {index}"}
                assert answer.headers.get("Connection") != "close"
        assert len(made) == 1
    finally:
        server.stop()


def test_a_client_asking_to_close_gets_its_connection_closed():
    server = ServerThread(_app()).start()
    try:
        answer = requests.post(f"{server.url}/echo", data="bye", headers={"Connection": "close"}, timeout=5)
        assert answer.json() == {"body": "bye"}
        assert answer.headers.get("Connection") == "close"
    finally:
        server.stop()


def test_stop_closes_kept_alive_connections(monkeypatch):
    first = ServerThread(_app()).start()
    http = requests.Session()
    assert http.post(f"{first.url}/echo", data="one", timeout=5).json() == {"body": "one"}
    first.stop()
    # The pooled connection is closed with the server: nothing of the stopped app answers any more.
    try:
        http.post(f"{first.url}/echo", data="two", timeout=2)
        raise AssertionError("a stopped simulator still answered")
    except requests.ConnectionError:
        pass
    finally:
        http.close()


def test_an_idle_kept_alive_connection_closes_quietly_and_real_errors_still_log(monkeypatch, caplog):
    """Issue 19: the expected end of an idle connection logged `ERROR werkzeug … Request timed out`; it is a DEBUG
    line now, while a malformed request is still an ERROR."""
    from simulators.common import KeepAliveHandler

    monkeypatch.setattr(KeepAliveHandler, "timeout", 0.3)
    server = ServerThread(_app()).start()
    caplog.set_level("DEBUG", logger="werkzeug")
    try:
        with socket.create_connection((server.host, server.port)) as idle:
            idle.settimeout(5)
            assert idle.recv(1) == b""  # the server closed it after the idle timeout
        with socket.create_connection((server.host, server.port)) as bad:
            bad.settimeout(5)
            bad.sendall(b"NOT A REQUEST\r\n\r\n")
            assert b"400" in bad.recv(200)
    finally:
        server.stop()
    quiet = [r for r in caplog.records if "timed out" in r.getMessage()]
    assert quiet and all(r.levelname == "DEBUG" for r in quiet)
    assert any(r.levelname == "ERROR" and "Bad request" in r.getMessage() for r in caplog.records)
