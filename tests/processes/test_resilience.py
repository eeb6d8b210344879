"""Lifecycles through the real processes while things fail: a SIGKILLed Celery worker, faulty simulators.

Either way every session must end in a terminal state (ARCHIVED, or TERMINATED/EXPIRED when its
retries ran out) with nothing leaked: no lab started or unknown in CML, no LDS session left
unreleased, no capacity held and no port held except by the WIPED labs kept for reuse (SPEC §2.4:
ports stay with a wiped lab).
"""

import os
import random
import time

import pytest

from lcm.tools.bench.evidence_checks import evidence_problems
from lcm.tools.bench.rig import drive
from sessions.models import LabletSession
from tests.support.processes import log_tails

TERMINAL = {"ARCHIVED", "TERMINATED", "EXPIRED"}


def _seed() -> int:
    """The run's random seed (printed on failure; `LCM_TEST_SEED` replays one)."""
    return int(os.environ.get("LCM_TEST_SEED") or random.SystemRandom().randrange(1_000_000))


class WorkerKiller:
    """On each poll of the driver: SIGKILL the Celery worker at random moments, restart it a moment later.

    Runs on the driver's thread: the launcher ties its children to the thread that started them.
    """

    def __init__(self, stack, rng: random.Random, kills: int):
        self.stack, self.rng, self.left = stack, rng, kills
        self.kills = 0
        self.down = False
        self.next_at = time.monotonic() + rng.uniform(0.5, 2.0)

    def __call__(self) -> None:
        if time.monotonic() < self.next_at:
            return
        if self.down:
            self.stack.start_service("worker")
            self.down = False
            self.next_at = time.monotonic() + self.rng.uniform(0.3, 1.5)
        elif self.left > 0:
            assert self.stack.kill_service("worker"), "the worker was not running"
            self.kills, self.left, self.down = self.kills + 1, self.left - 1, True
            self.next_at = time.monotonic() + self.rng.uniform(0.0, 1.0)


@pytest.mark.django_db(transaction=True)
def test_worker_sigkilled_at_random_moments_during_100_lifecycles(start_stack):
    seed = _seed()
    stack, rig = start_stack()
    rig.add_workers(5, cpu_cores=20, memory_gb=64, storage_gb=1000, max_nodes=200)
    definition = rig.definition()
    killer = WorkerKiller(stack, random.Random(seed), kills=8)

    try:
        # Booked over 20 s, so the lifecycles outlast the 8 kills (at most 8 × 2.5 s after the first).
        result = drive(rig, definition, 100, rate=5, timeout=240, on_poll=killer)
    except Exception as exc:
        pytest.fail(f"seed {seed}, {killer.kills} kills: {exc}\n{log_tails(stack)}")

    assert killer.kills == 8, f"only {killer.kills} kills happened before the lifecycles ended (seed {seed})"
    statuses = rig.statuses(result.ids)
    assert set(statuses) <= TERMINAL and sum(statuses.values()) == 100, statuses
    assert rig.leaks(result.ids, except_lost_lds_creates=True) == [], f"seed {seed}"
    # The one thing a crash can leave: an LDS session whose create answer died with the worker. The LDS
    # API gives no way to find it again (no idempotency key, no lookup by our reference); it was never
    # launched and holds no lab, port or capacity. At most the creates in flight at each kill.
    lost = rig.lost_lds_creates()
    assert len(lost) <= killer.kills * stack.config.worker_concurrency, (seed, lost)


# 10 % of calls answer 5xx and 5 % time out, in every simulator LCM calls. A timeout is a reply
# slower than LCM's read timeout (1 s here); the call is still carried out, as a real slow server
# would, except for the LDS session create: its answer (the new session's id) is the only way to
# find that session again (the LDS API has no lookup by our reference), so a lost answer there
# would leak an LDS session whatever LCM did. Its timeouts are answered 504 after the delay (the
# request not carried out), which is the one kind of timeout LCM can clean up after.
FAULTS = [
    {"operation": "*", "status": 500, "probability": 0.10, "times": None},
    {"operation": "*", "delay": 1.5, "probability": 0.05 / 0.90, "times": None},  # 5 % of all calls
]
LDS_CREATE_FAULTS = [
    {"operation": "postLDSSession", "status": 500, "probability": 0.10, "times": None},
    {"operation": "postLDSSession", "status": 504, "delay": 1.5, "probability": 0.05 / 0.90, "times": None},
    {"operation": "postLDSSession", "times": None},  # no fault: shields the create from the rules below
]


@pytest.mark.django_db(transaction=True)
def test_lifecycles_with_5xx_and_timeouts_injected_in_every_simulator(start_stack):
    stack, rig = start_stack(env={"LCM_HTTP_READ_TIMEOUT": "1", "LCM_MAX_RECONCILE_ATTEMPTS": "6"})
    rig.add_workers(5, cpu_cores=20, memory_gb=64, storage_gb=1000, max_nodes=200)
    definition = rig.definition()
    rig.faults(FAULTS, simulators=("cml", "grading"))
    rig.faults(LDS_CREATE_FAULTS + FAULTS, simulators=("lds",))

    try:
        result = drive(rig, definition, 100, rate=25, timeout=240)
    except Exception as exc:
        pytest.fail(f"{exc}\n{log_tails(stack)}")

    statuses = rig.statuses(result.ids)
    assert set(statuses) <= TERMINAL and sum(statuses.values()) == 100, statuses
    rig.clear_faults()
    assert rig.leaks(result.ids) == []
    # The faults really were met: the reconcilers logged failed passes and retried them.
    assert "failed:" in stack.log_path("worker").read_text()


@pytest.mark.django_db(transaction=True)
def test_worker_sigkilled_at_random_moments_during_50_teardowns_keeps_the_evidence_safe(start_stack):
    """SPEC §9 under crashes: the stack collects evidence (moto's S3) before every wipe of a lab a candidate used.
    With the Celery worker SIGKILLed at random moments, every lab wiped has its evidence recorded first, and once
    the loops settle no object lacks its row and no row its object."""
    seed = _seed()
    stack, rig = start_stack()
    assert stack.env["LCM_AWS_ENDPOINT_URL"], "the stack's evidence store is the simulators' moto"
    rig.add_workers(5, cpu_cores=20, memory_gb=64, storage_gb=1000, max_nodes=200)
    definition = rig.definition()
    killer = WorkerKiller(stack, random.Random(seed), kills=6)

    try:
        # Each candidate finishes as soon as the session is READY, so teardowns run all along the kills.
        result = drive(rig, definition, 50, rate=4, timeout=240, on_poll=killer)
    except Exception as exc:
        pytest.fail(f"seed {seed}, {killer.kills} kills: {exc}\n{log_tails(stack)}")

    statuses = rig.statuses(result.ids)
    assert set(statuses) <= TERMINAL and sum(statuses.values()) == 50, statuses
    assert killer.kills >= 1, f"no kill happened before the lifecycles ended (seed {seed})"
    assert rig.leaks(result.ids, except_lost_lds_creates=True) == [], f"seed {seed}"
    ran = LabletSession.objects.filter(pk__in=result.ids, started_at__isnull=False).count()
    assert ran >= 40, f"only {ran} sessions ran (seed {seed})"
    assert evidence_problems(rig, result.ids) == [], f"seed {seed}, {killer.kills} kills"
