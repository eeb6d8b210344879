"""etcd stops and comes back under the real process set (SPEC §4, §12): with no tick due during the test, a lone
booking after etcd answers again reaches READY by the watcher's reaction (and a placement leader that held its
lease through the outage), not by a tick; the watcher says so in one line per outage, not a loop."""

import time

import pytest

from tests.support.processes import log_tails
from tests.support.waiting import wait_until

# No tick falls inside the test (the first would come 10 minutes after start): only the watcher can react.
SLOW_TICKS = {"LCM_LOOP_PLACEMENT_SECONDS": "600", "LCM_LOOP_LABLETS_SECONDS": "600"}


def _lone_booking_reaches_ready(stack, rig, definition, what: str) -> float:
    started = time.monotonic()
    [session_id] = rig.book(definition, 1)
    wait_until(
        lambda: rig.statuses([session_id]).get("READY") == 1,
        timeout=30,
        what=f"a lone booking reaching READY {what}",
        details=lambda: f"{rig.statuses([session_id])}\n{log_tails(stack)}",
    )
    return time.monotonic() - started


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outage_seconds", [30.0, 1.5], ids=["30 s outage", "quick restart"])
def test_after_etcd_comes_back_the_watcher_reacts_again_and_placement_resumes(start_stack, outage_seconds):
    stack, rig = start_stack(env=SLOW_TICKS)
    rig.add_workers(1, cpu_cores=20, memory_gb=64, storage_gb=1000, max_nodes=200)
    definition = rig.definition()
    before = _lone_booking_reaches_ready(stack, rig, definition, "before the outage")
    # Placement is held by its leader's lease now; etcd goes away with it held.
    stack.stop_service("etcd")
    time.sleep(outage_seconds)
    stack.start_service("etcd")
    after = _lone_booking_reaches_ready(stack, rig, definition, "after etcd came back")
    print(f"booking → READY: {before:.2f} s before, {after:.2f} s after a {outage_seconds} s outage (no tick)")
    watcher_log = stack.log_path("watcher").read_text()
    assert watcher_log.count("retrying every") <= 1, watcher_log[-3000:]
