"""etcd stops and comes back under the real process set (SPEC §4, §12; issue 18's recovery finding): stopped for
30 s and started again, and separately restarted quickly. With no tick due during the test, a lone booking made
once etcd answers again reaches READY within 10 s by the watcher's reaction, not by a tick; leader election and
projection resumed (the placement leader that held its lease when etcd stopped places the booking at once, its
status is projected into etcd); the watcher says so in one line per outage, not a loop.

The issue asks for the tick interval at 60 s; the ticks here are at 600 s, which makes the same point with more
room: no tick can fall inside a test that lasts well under a minute after the stack started, so every reaction
after the outage is the watcher's (and "placed within one tick" holds a fortiori)."""

import time

import pytest

from lcm import coordination
from tests.support.processes import log_tails
from tests.support.waiting import wait_until

# No tick falls inside the test (the first would come 10 minutes after start): only the watcher can react.
SLOW_TICKS = {"LCM_LOOP_PLACEMENT_SECONDS": "600", "LCM_LOOP_LABLETS_SECONDS": "600"}
REACTION_SECONDS = 10  # the acceptance bound, from etcd answering again to READY


def _lone_booking_reaches_ready(stack, rig, definition, what: str, timeout: float) -> tuple[str, float]:
    started = time.monotonic()
    [session_id] = rig.book(definition, 1)
    wait_until(
        lambda: rig.statuses([session_id]).get("READY") == 1,
        timeout=timeout,
        what=f"a lone booking reaching READY {what}",
        details=lambda: f"{rig.statuses([session_id])}\n{log_tails(stack, ('watcher', 'worker', 'etcd'))}",
    )
    return session_id, time.monotonic() - started


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outage_seconds", [30.0, 1.5], ids=["30 s outage", "quick restart"])
def test_after_etcd_comes_back_the_watcher_reacts_again_and_placement_resumes(start_stack, outage_seconds):
    stack, rig = start_stack(env=SLOW_TICKS)
    rig.add_workers(1, cpu_cores=20, memory_gb=64, storage_gb=1000, max_nodes=200)
    definition = rig.definition()
    _, before = _lone_booking_reaches_ready(stack, rig, definition, "before the outage", timeout=30)
    # Placement is held by its leader's lease now; etcd goes away with it held.
    assert coordination.coordinator().leader("placement"), "no placement leader before the outage"
    stack.stop_service("etcd")
    time.sleep(outage_seconds)
    stack.start_service("etcd")  # returns once etcd answers its health check
    session_id, after = _lone_booking_reaches_ready(
        stack, rig, definition, "after etcd came back", timeout=REACTION_SECONDS
    )
    print(f"booking → READY: {before:.2f} s before, {after:.2f} s after a {outage_seconds} s outage (no tick)")

    # Projection and leader election resumed: the status is in etcd, a placement leader holds the lease.
    coord = coordination.coordinator()
    wait_until(
        lambda: coord.get(coordination.session_status_key(session_id)) == "READY",
        timeout=5,
        what="the READY status projected into etcd",
    )
    assert coord.leader("placement"), "no placement leader after the outage"

    # No placement or lablets tick ran: every reaction was the watcher's.
    beat_log = stack.log_path("beat").read_text()
    assert "Sending due task tick-placement" not in beat_log and "Sending due task tick-lablets" not in beat_log

    # One line when the watch went, one when it came back: not a loop.
    watcher_log = stack.log_path("watcher").read_text()
    went, back = watcher_log.count("retrying every"), watcher_log.count("watching again")
    if outage_seconds >= 10:
        assert (went, back) == (1, 1), watcher_log[-3000:]
    else:
        assert went == back <= 1, watcher_log[-3000:]
