"""What wakes the loops: the watcher's routing of key changes, and kicks/requeues deduplicated in Redis."""

import base64
import json
import time

import pytest
import redis

from lcm import loops
from sessions.management.commands.lcm_watch import on_change
from sessions.reconcilers import WAKE_ON_STATUS, sessions_needing_work
from sessions.states import SessionStatus

SESSION = "0b9f3d8e-6f0e-4d43-9d55-0f1b2c3d4e5f"
WORKER = "4a2c8d1e-2b3f-4c5d-8e9f-a0b1c2d3e4f5"
BROKER = "redis://127.0.0.1:6379/11"


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(loops, "enqueue", lambda loop, key, countdown=None: seen.append(("enqueue", loop, key)))
    monkeypatch.setattr(loops, "kick", lambda loop: seen.append(("kick", loop)))
    return seen


@pytest.mark.parametrize("status", sorted(SessionStatus.values))
def test_a_session_change_wakes_what_it_calls_for(status, calls):
    on_change("put", f"/lcm/sessions/{SESSION}/status", status)
    if status == SessionStatus.PENDING:
        assert calls == [("kick", "placement")]
    elif status in WAKE_ON_STATUS:
        assert calls == [("enqueue", "lablets", SESSION)]
    else:  # waiting (READY, RUNNING), carried on by the pass that set it (INSTANTIATING), or gone
        assert calls == []


def test_only_status_puts_of_sessions_and_worker_changes_wake(calls):
    on_change("put", f"/lcm/sessions/{SESSION}/ports", '{"a": 2000}')
    on_change("delete", f"/lcm/sessions/{SESSION}/status", None)
    on_change("put", "/lcm/leader/placement", "me")
    assert calls == []
    on_change("put", f"/lcm/workers/{WORKER}/desired", "STOPPED")
    assert calls == [("enqueue", "workers", WORKER)]


@pytest.mark.django_db
def test_every_waking_status_is_one_the_tick_selects():
    """The watcher wakes no status the tick would not also pick now (the ticks stay the safety net)."""
    from django.utils import timezone

    from tests.factories import SessionFactory, WorkerFactory

    worker = WorkerFactory()
    now = timezone.now()
    ids = {
        status: SessionFactory(
            status=status, worker=worker, timeslot_start=now, cleanup_pending=status in ("EXPIRED", "TERMINATED")
        ).pk
        for status in WAKE_ON_STATUS
    }
    picked = set(sessions_needing_work())
    assert {status for status, pk in ids.items() if pk in picked} == set(WAKE_ON_STATUS)


@pytest.fixture
def broker(settings):
    client = redis.Redis.from_url(BROKER)  # Redis runs wherever the suite does, like PostgreSQL
    client.flushdb()
    settings.CELERY_BROKER_URL = BROKER
    from lcm.celery import app

    old = app.conf.broker_url
    app.conf.broker_url = BROKER
    loops._redis = None
    yield client
    app.conf.broker_url = old
    loops._redis = None
    client.flushdb()


def _queued(client) -> int:
    return sum(client.llen(queue) for queue in ("celery", "lcm.ticks"))


def test_a_key_waits_in_the_queue_once(broker):
    assert loops.enqueue_many("lablets", [SESSION, SESSION, WORKER]) == 2
    assert loops.enqueue_many("lablets", [SESSION]) == 0  # still queued
    assert broker.llen("celery") == 2


def _ticks(client) -> list:
    """The tick messages waiting, oldest first: (loop, whether it is delayed)."""
    ticks = []
    for raw in reversed(client.lrange("lcm.ticks", 0, -1)):  # kombu pushes on the left, pops on the right
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        ticks.append((args[0], message["headers"]["eta"] is not None))
    return ticks


def test_kicks_give_a_tick_at_once_then_one_trailing_tick_per_spacing(broker, settings):
    settings.LCM_KICK_SPACING_SECONDS = 0.3
    for _ in range(20):  # a burst of bookings
        loops.kick("placement")
    # One tick now, one at the end of the spacing; the other 18 kicks are covered by those.
    assert _ticks(broker) == [("placement", False), ("placement", True)]
    time.sleep(0.35)
    loops.kick("placement")
    assert _ticks(broker)[-1] == ("placement", False) and len(_ticks(broker)) == 3


def test_a_starting_worker_forgets_the_markers_so_the_next_tick_queues_again(broker):
    assert loops.enqueue_many("lablets", [SESSION]) == 1
    assert 0 < broker.ttl(loops._queued_marker("lablets", SESSION)) <= loops.TASK_EXPIRES_SECONDS
    broker.delete("celery")  # the message a SIGKILLed worker had taken
    assert loops.enqueue_many("lablets", [SESSION]) == 0
    assert loops.forget_queued() == 1
    assert loops.enqueue_many("lablets", [SESSION]) == 1
