"""Coordination: the in-process stand-in, real etcd (started here), the projection, and degradation."""

import socket
import time

import pytest

from lcm.coordination import (
    EtcdCoordinator,
    InProcessCoordinator,
    project_session,
    project_sessions,
    session_ports_key,
    session_status_key,
)
from lcm.reconcile import Result, backoff, run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("backend", ["in-process", "etcd"])
def test_put_only_on_change_watch_and_leader(backend, request):
    coord = InProcessCoordinator() if backend == "in-process" else EtcdCoordinator(request.getfixturevalue("etcd_url"))
    seen = []
    cancel = coord.watch_prefix("/lcm/sessions/", lambda kind, key, value: seen.append((kind, key, value)))
    try:
        assert coord.put_if_changed("/lcm/sessions/a/status", "READY") is True
        assert coord.put_if_changed("/lcm/sessions/a/status", "READY") is False
        assert coord.get("/lcm/sessions/a/status") == "READY"
        pair = {"/lcm/sessions/b/status": "READY", "/lcm/sessions/b/ports": "{}"}
        assert coord.put_many_if_changed(pair) == list(pair)
        assert coord.put_many_if_changed(pair) == []
        assert coord.put_many_if_changed(pair | {"/lcm/sessions/b/status": "RUNNING"}) == ["/lcm/sessions/b/status"]
        coord.delete_many(list(pair))
        assert coord.get("/lcm/sessions/b/status") is None and coord.get("/lcm/sessions/b/ports") is None
        assert coord.delete("/lcm/sessions/a/status")
        for _ in range(50):
            if len(seen) >= 7:
                break
            time.sleep(0.05)
        a_events = [event for event in seen if event[1].startswith("/lcm/sessions/a/")]
        assert a_events == [("put", "/lcm/sessions/a/status", "READY"), ("delete", "/lcm/sessions/a/status", None)]
        b_puts = [event for event in seen if event[1].startswith("/lcm/sessions/b/") and event[0] == "put"]
        assert b_puts == [
            ("put", "/lcm/sessions/b/status", "READY"),
            ("put", "/lcm/sessions/b/ports", "{}"),
            ("put", "/lcm/sessions/b/status", "RUNNING"),
        ]
        assert coord.try_lead(f"loop-{backend}") is True
        assert coord.try_lead(f"loop-{backend}") is True  # refreshing one's own lease
        coord.resign(f"loop-{backend}")
    finally:
        cancel()


def test_a_second_holder_cannot_lead(etcd_url, monkeypatch):
    import lcm.coordination as coordination

    first = EtcdCoordinator(etcd_url)
    assert first.try_lead("placement-x")
    monkeypatch.setattr(coordination, "_PROCESS_TOKEN", "another-process")
    assert EtcdCoordinator(etcd_url).try_lead("placement-x") is False


def test_etcd_down_degrades_without_raising():
    coord = EtcdCoordinator(f"http://127.0.0.1:{_free_port()}", timeout=0.5)
    assert coord.put_if_changed("/lcm/x", "y") is False
    assert coord.get("/lcm/x") is None
    assert coord.try_lead("placement") is True  # placement stays safe through row locks
    assert coord.healthy() is False


def test_projection_writes_and_removes_session_keys(monkeypatch):
    import lcm.coordination as coordination

    coord = InProcessCoordinator()
    monkeypatch.setattr(coordination, "_coordinator", coord)
    project_session("s1", "READY", {"a": 2000})
    assert coord.get(session_status_key("s1")) == "READY"
    project_session("s1", "EXPIRED", {}, clean=False)
    assert coord.get(session_status_key("s1")) == "EXPIRED"
    project_session("s1", "ARCHIVED", {})
    assert coord.get(session_status_key("s1")) is None
    project_session("s2", "TERMINATED", {"a": 2000}, clean=False)  # teardown to do: a put the watcher acts on
    assert coord.get(session_status_key("s2")) == "TERMINATED"
    project_session("s2", "TERMINATED", {}, clean=True)
    assert coord.get(session_status_key("s2")) is None


@pytest.mark.parametrize("backend", ["in-process", "etcd"])
def test_a_large_batch_is_projected_within_etcds_transaction_limit(backend, request, monkeypatch):
    """300 sessions (600 keys) at once: etcd refuses a transaction of more than 128 operations, so the
    projection writes in chunks, and every key lands (or goes) all the same."""
    import lcm.coordination as coordination

    coord = InProcessCoordinator() if backend == "in-process" else EtcdCoordinator(request.getfixturevalue("etcd_url"))
    monkeypatch.setattr(coordination, "_coordinator", coord)
    ids = [f"batch-{backend}-{n}" for n in range(300)]
    project_sessions((i, "SCHEDULED", {"vnc": 3000 + n}, True) for n, i in enumerate(ids))
    assert all(coord.get(session_status_key(i)) == "SCHEDULED" for i in ids)
    assert coord.get(session_ports_key(ids[7])) == '{"vnc": 3007}'
    project_sessions((i, "ARCHIVED", {}, True) for i in ids[:200])
    assert [coord.get(session_status_key(i)) for i in ids[:200]] == [None] * 200
    assert all(coord.get(session_status_key(i)) == "SCHEDULED" for i in ids[200:])


@pytest.mark.django_db
def test_reconcile_runner_isolates_errors_and_backs_off():
    calls = []

    def failing(key):
        raise RuntimeError(f"boom {key}")

    result = run("demo", "k1", failing, on_error=lambda key, exc: calls.append((key, str(exc))) or 4.0)
    assert result.action == "error" and result.requeue_after == 4.0 and "boom k1" in result.error
    assert calls == [("k1", "boom k1")]
    assert run("demo", "k2", lambda key: Result.requeue(2, "wait")).requeue_after == 2
    assert backoff(1).total_seconds() == 2 and backoff(20).total_seconds() == 300
