"""etcd stops and comes back under the real process set (SPEC §4, §12; issue 18's recovery finding).

- Stopped 30 s and started again, and separately restarted quickly (1.5 s): with no tick due during the
  test, a lone booking made once etcd answers again reaches READY within 10 s by the watcher's reaction, not
  a tick; projection and leader election resumed (its status is projected into etcd, the placement lease
  is taken again); the watcher says so in one line per outage, not a loop. The issue asks for ticks at 60 s;
  these run at 600 s, the same point with more room (no tick can fall inside the test, which the beat log
  confirms).
- With the placement lease held at the moment etcd stops (a tick cut off by the outage never refreshes nor
  resigns it; here this test process holds it, as that holder would), etcd revives the lease with a fresh
  TTL: the first booking after etcd returns is placed within one tick (ticks at 60 s, as the issue asks),
  not a whole interval later.
"""

import time

import pytest

from lcm import coordination
from tests.support.processes import log_tails
from tests.support.waiting import wait_until

# No tick falls inside the test (the first would come 10 minutes after start): only the watcher can react.
SLOW_TICKS = {"LCM_LOOP_PLACEMENT_SECONDS": "600", "LCM_LOOP_LABLETS_SECONDS": "600"}
MINUTE_TICKS = {"LCM_LOOP_PLACEMENT_SECONDS": "60", "LCM_LOOP_LABLETS_SECONDS": "60"}
REACTION_SECONDS = 10  # the acceptance bound, from etcd answering again to READY


def _lone_booking_reaches_ready(stack, rig, definition, what: str, timeout: float) -> tuple[str, float]:
    started = time.monotonic()
    [session_id] = rig.book(definition, 1)
    wait_until(
        lambda: rig.statuses([session_id]).get("READY") == 1,
        timeout=timeout,
        what=f"a lone booking reaching READY {what}",
        details=lambda: f"{rig.statuses([session_id])}\n{log_tails(stack, ('watcher', 'worker', 'beat'))}",
    )
    return session_id, time.monotonic() - started


def _one_line_each_way(stack, *, must_notice: bool) -> None:
    watcher_log = stack.log_path("watcher").read_text()
    went, back = watcher_log.count("retrying every"), watcher_log.count("watching again; the ticks")
    if must_notice:
        assert (went, back) == (1, 1), watcher_log[-3000:]
    else:
        assert went == back <= 1, watcher_log[-3000:]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outage_seconds", [30.0, 1.5], ids=["30 s outage", "quick restart"])
def test_after_etcd_comes_back_the_watcher_reacts_again_and_placement_resumes(start_stack, outage_seconds):
    stack, rig = start_stack(env=SLOW_TICKS)
    rig.add_workers(1, cpu_cores=20, memory_gb=64, storage_gb=1000, max_nodes=200)
    definition = rig.definition()
    _, before = _lone_booking_reaches_ready(stack, rig, definition, "before the outage", timeout=30)
    stack.stop_service("etcd")
    time.sleep(outage_seconds)
    stack.start_service("etcd")  # returns once etcd answers its health check
    session_id, after = _lone_booking_reaches_ready(
        stack, rig, definition, "after etcd came back", timeout=REACTION_SECONDS
    )
    print(f"booking → READY: {before:.2f} s before, {after:.2f} s after a {outage_seconds} s outage (no tick)")

    # Projection resumed: the status is in etcd.
    coord = coordination.coordinator()
    wait_until(
        lambda: coord.get(coordination.session_status_key(session_id)) == "READY",
        timeout=5,
        what="the READY status projected into etcd",
    )
    # (Leader election: the booking was placed, which only a tick holding the placement lease does; the lease
    # is released after each tick, so there is no standing leader key to read.)

    # No placement or lablets tick ran: every reaction was the watcher's.
    beat_log = stack.log_path("beat").read_text()
    assert "Sending due task tick-placement" not in beat_log and "Sending due task tick-lablets" not in beat_log
    _one_line_each_way(stack, must_notice=outage_seconds >= 10)


@pytest.mark.django_db(transaction=True)
def test_with_the_placement_lease_held_when_etcd_stops_the_next_booking_is_placed_within_one_tick(start_stack):
    stack, rig = start_stack(env=MINUTE_TICKS)
    rig.add_workers(1, cpu_cores=20, memory_gb=64, storage_gb=1000, max_nodes=200)
    definition = rig.definition()
    _lone_booking_reaches_ready(stack, rig, definition, "before the outage", timeout=30)
    coord = coordination.coordinator()
    wait_until(lambda: coord.try_lead("placement"), timeout=10, what="this process holding the placement lease")
    holder = coord.leader("placement")
    stack.stop_service("etcd")
    time.sleep(5)
    stack.start_service("etcd")
    assert coordination.coordinator().leader("placement") == holder  # etcd kept the lease, with a fresh TTL
    session_id, after = _lone_booking_reaches_ready(
        stack, rig, definition, "after etcd came back, the lease held by a gone holder", timeout=60
    )
    print(f"booking → READY {after:.2f} s after etcd came back with a stale placement lease (tick interval 60 s)")
    assert coordination.coordinator().leader("placement") != holder  # a worker leads now
    _one_line_each_way(stack, must_notice=False)
