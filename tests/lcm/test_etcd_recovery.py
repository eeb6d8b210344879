"""etcd goes away and comes back (SPEC §4, §12): the watcher watches again by itself with one log line per outage,
and the placement leader keeps its lease instead of waiting for it to expire. Against a real etcd process that
the tests stop and start again on the same ports and data."""

import threading
import time

import pytest

from lcm import coordination
from lcm.coordination import EtcdCoordinator, holder_id, leader_key
from sessions.management.commands import lcm_watch
from tests.support.etcd import EtcdServer
from tests.support.waiting import poll


@pytest.fixture
def etcd_server():
    server = EtcdServer().start()
    yield server
    server.remove()


@pytest.fixture
def watcher(etcd_server, monkeypatch):
    """`lcm_watch`'s watcher on its own thread, its changes and its log lines recorded."""
    monkeypatch.setattr(lcm_watch, "RETRY_SECONDS", 0.2)
    seen, lines = [], []
    monkeypatch.setattr(lcm_watch, "on_change", lambda kind, key, value: seen.append((kind, key, value)))
    monkeypatch.setattr(lcm_watch.loops, "kick", lambda loop: lines.append(f"kick {loop}"))
    coord = EtcdCoordinator(etcd_server.url, timeout=0.5)
    runner = lcm_watch.Watcher(coord, write=lines.append)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    yield coord, seen, lines
    stop.set()
    thread.join(timeout=10)


def _put_seen(etcd_server, seen, value: str, timeout: float = 10.0) -> bool:
    """Put a key through another client (as another process would) until the watcher sees a put of it."""
    key = f"{coordination.PREFIX}/sessions/00000000-0000-0000-0000-000000000000/status"
    writer = EtcdCoordinator(etcd_server.url)
    deadline, attempt = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        attempt += 1
        written = f"{value}-{attempt}"  # a new value each time: an unchanged one is not put again
        writer.put_if_changed(key, written)
        if poll(lambda written=written: ("put", key, written) in seen, timeout=0.5, interval=0.05):
            return True
    return False


@pytest.mark.parametrize("outage_seconds", [1.5, 6.0], ids=["quick restart", "longer outage"])
def test_the_watcher_watches_again_after_etcd_comes_back(etcd_server, watcher, outage_seconds):
    _coord, seen, lines = watcher
    assert _put_seen(etcd_server, seen, "READY"), lines

    etcd_server.stop()
    time.sleep(outage_seconds)
    etcd_server.start()
    started = time.monotonic()
    assert _put_seen(etcd_server, seen, "TERMINATED"), lines  # within 10 s of etcd answering
    print(f"watch resumed {time.monotonic() - started:.2f} s after etcd answered ({outage_seconds} s outage)")
    down = [line for line in lines if "retrying" in line]
    assert len(down) <= 1 and lines.count("watching again; the ticks pick up what changed meanwhile") <= 1, lines
    if down:  # it noticed the outage: it said so once, and kicked the ticks once it watched again
        assert "kick lablets" in lines


def test_the_placement_leader_keeps_its_lease_through_an_etcd_restart(etcd_server):
    coord = EtcdCoordinator(etcd_server.url, timeout=0.5)
    assert coord.try_lead("placement", ttl=30) is True
    etcd_server.stop()
    coord.get(leader_key("placement"))  # fails: the coordinator forgets its client (and the lease objects)
    etcd_server.start()
    assert coord.get(leader_key("placement")) == holder_id()  # the lease survived the restart
    # Not "refused until the lease expires": it is still ours, and refreshed.
    assert coord.try_lead("placement", ttl=30) is True
    assert coord.try_lead("placement", ttl=30) is True
