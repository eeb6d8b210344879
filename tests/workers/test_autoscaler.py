"""The pure autoscaler (`workers.autoscaler.plan`): scale-up, revival, scale-down and idle pause over plain data."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from lcm.versions import ami_version_hint
from scheduling.capacity import Demand, WorkerCapacity
from scheduling.placement import choose_worker, evaluate
from workers.autoscaler import PendingSession, Policy, TemplateOption, WorkerState, plan

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SMALL_LAB = Demand(cpu_cores=2, memory_gb=4, storage_gb=10, node_count=3, ports=3)
BIG_LAB = Demand(cpu_cores=12, memory_gb=48, storage_gb=100, node_count=30, ports=10)


def template(name, cpu, cost, *, licence="ENTERPRISE", memory=None, nodes=60, region="us-east-1", version="2.9"):
    return TemplateOption(
        id=f"t-{name}",
        name=name,
        region=region,
        license_type=licence,
        cpu_cores=cpu,
        memory_gb=memory or cpu * 4,
        storage_gb=cpu * 50,
        max_nodes=nodes,
        ports=8000,
        startup_minutes=10,
        cost_per_hour=cost,
        cml_version=version,
    )


SMALL = template("small", 8, 0.384)
MEDIUM = template("medium", 16, 0.768)
PERSONAL = template("personal", 4, 0.192, licence="PERSONAL", nodes=20)
TEMPLATES = [PERSONAL, SMALL, MEDIUM]


def session(i, demand=SMALL_LAB, *, minutes=20, version_min="", version_max="") -> PendingSession:
    return PendingSession(f"s{i}", demand, NOW + timedelta(minutes=minutes), version_min, version_max)


def worker(name, status="RUNNING", *, cpu=8, used=0, sessions=0, region="us-east-1", desired="RUNNING", **state):
    capacity = WorkerCapacity(
        worker_id=name,
        name=name,
        status=status,
        license_type="ENTERPRISE",
        cml_version="2.9.0",
        cpu_total=cpu,
        memory_total=cpu * 4,
        storage_total=cpu * 50,
        nodes_total=60,
        ports_total=8000,
        cpu_used=used,
        memory_used=used * 2,
        storage_used=used * 5,
        nodes_used=sessions * 3,
        ports_used=sessions * 3,
        sessions=sessions,
    )
    state.setdefault("empty_since", NOW - timedelta(hours=1))
    return WorkerState(capacity=capacity, region=region, desired_status=desired, **state)


def actions(decisions):
    return [d.action for d in decisions]


# -- scale up -------------------------------------------------------------------------------


def test_one_demand_that_fits_nowhere_launches_the_cheapest_template_that_fits_it():
    decisions = plan(NOW, [session(1)], [], TEMPLATES, Policy())
    assert actions(decisions) == ["LAUNCH"]
    assert decisions[0].template_name == "personal"  # one 2-CPU session: the personal worker is cheapest
    assert decisions[0].sessions == ("s1",)
    assert "fit no running or coming worker" in decisions[0].reason


def test_many_sessions_share_one_worker_at_the_lowest_cost_per_session():
    decisions = plan(NOW, [session(i) for i in range(4)], [], TEMPLATES, Policy())
    assert actions(decisions) == ["LAUNCH"]
    assert decisions[0].template_name == "small"  # $0.096/session, not four personal workers at $0.192
    assert sorted(decisions[0].sessions) == ["s0", "s1", "s2", "s3"]


def test_demand_beyond_one_worker_launches_as_many_as_needed_in_one_tick():
    decisions = plan(NOW, [session(i) for i in range(10)], [], [SMALL], Policy())
    assert actions(decisions) == ["LAUNCH", "LAUNCH", "LAUNCH"]  # 4 + 4 + 2 sessions of 2 CPU on 8-CPU workers
    assert sorted(len(d.sessions) for d in decisions) == [2, 4, 4]


def test_the_largest_unmet_demand_picks_the_template():
    decisions = plan(NOW, [session(1), session(2, BIG_LAB)], [], TEMPLATES, Policy())
    assert actions(decisions) == ["LAUNCH"]
    assert decisions[0].template_name == "medium" and sorted(decisions[0].sessions) == ["s1", "s2"]


def test_a_running_worker_with_room_launches_nothing():
    assert plan(NOW, [session(1)], [worker("w1", used=4, sessions=2)], TEMPLATES, Policy()) == []


def test_coming_capacity_counts_so_one_demand_starts_one_worker():
    for status in ("PENDING", "PROVISIONING", "STARTING", "STOPPING", "STOPPED"):
        assert plan(NOW, [session(1)], [worker("w1", status)], TEMPLATES, Policy()) == []  # desired RUNNING
    # A coming worker holds what it is coming for: a second demand that no longer fits launches one more.
    full = [worker("w1", "STARTING", cpu=2)]
    assert actions(plan(NOW, [session(1), session(2)], full, [SMALL], Policy())) == ["LAUNCH"]


def test_a_coming_worker_that_will_be_stopped_is_no_capacity():
    decisions = plan(NOW, [session(1)], [worker("w1", "STARTING", desired="STOPPED")], [SMALL], Policy())
    assert actions(decisions) == ["LAUNCH"]


def test_no_template_fits_waits_with_the_reasons():
    huge = Demand(cpu_cores=64, memory_gb=64, storage_gb=10, node_count=3, ports=3)
    decisions = plan(NOW, [session(1, huge)], [], TEMPLATES, Policy())
    assert actions(decisions) == ["WAIT"]
    assert "not enough cpu" in decisions[0].reason and "medium" in decisions[0].reason


def test_the_cml_version_the_ami_promises_is_checked():
    decisions = plan(NOW, [session(1, version_min="2.10")], [], [SMALL], Policy())
    assert actions(decisions) == ["WAIT"] and "older than 2.10" in decisions[0].reason
    newer = template("newer", 8, 0.5, version="2.10")
    assert actions(plan(NOW, [session(1, version_min="2.10")], [], [SMALL, newer], Policy())) == ["LAUNCH"]
    unknown = template("unknown", 8, 0.5, version="")
    decisions = plan(NOW, [session(1, version_min="2.10")], [], [unknown], Policy())
    assert actions(decisions) == ["WAIT"] and "CML unknown is older than 2.10" in decisions[0].reason
    assert actions(plan(NOW, [session(1)], [], [unknown], Policy())) == ["LAUNCH"]  # no bound: any version


@pytest.mark.parametrize(
    ("promised", "version_min", "version_max", "refusal"),
    [
        ("2.9", "2.9.1", "", "CML 2.9 is older than 2.9.1"),  # cml-2.9* may boot 2.9.0
        ("2.9", "2.9", "", None),
        ("2.9", "2.9.0", "2.9", None),
        ("2.9", "", "2.9.0", "CML 2.9 is newer than 2.9.0"),  # ... or 2.9.3
        ("2.9.1", "2.9.1", "", None),
        ("2.10", "2.9.1", "2.10", None),
        ("2.9.0", "", "2.8", "CML 2.9.0 is newer than 2.8"),
    ],
)
def test_the_autoscaler_launches_only_what_placement_accepts(promised, version_min, version_max, refusal):
    """One fit rule: the worker a template launches (at the version its AMI promises) is one placement accepts,
    and when placement would refuse it the autoscaler launches nothing and waits for the same reason."""
    promising = template("promising", 8, 0.5, version=promised)
    decisions = plan(NOW, [session(1, version_min=version_min, version_max=version_max)], [], [promising], Policy())
    launched = promising.capacity()  # what the LAUNCH brings: an empty worker of the template
    placed = evaluate(launched, SMALL_LAB, cml_version_min=version_min, cml_version_max=version_max)
    assert placed.reason == refusal
    if refusal is None:
        assert actions(decisions) == ["LAUNCH"]
        assert choose_worker([launched], SMALL_LAB, cml_version_min=version_min, cml_version_max=version_max)
    else:
        assert actions(decisions) == ["WAIT"] and f"promising: {refusal}" in decisions[0].reason


def test_a_coming_worker_of_a_promising_template_is_counted_for_that_version():
    coming = worker("booting", status="STARTING")
    coming = dataclasses.replace(coming, capacity=dataclasses.replace(coming.capacity, cml_version="2.9"))
    demand = session(1, version_min="2.9")
    assert plan(NOW, [demand], [coming], [SMALL], Policy()) == []  # it serves the session: no second worker
    newer = session(2, version_min="2.9.1")
    assert actions(plan(NOW, [newer], [coming], [SMALL], Policy())) == ["WAIT"]


def test_licence_affinity_is_respected():
    personal_only = Demand(2, 4, 10, 3, 3, ("PERSONAL",))
    enterprise_only = Demand(2, 4, 10, 3, 3, ("ENTERPRISE",))
    assert plan(NOW, [session(1, personal_only)], [], TEMPLATES, Policy())[0].template_name == "personal"
    assert plan(NOW, [session(1, enterprise_only)], [], TEMPLATES, Policy())[0].template_name == "small"


def test_the_maximum_per_region_is_respected():
    fleet = [worker("w1", used=8, sessions=4), worker("w2", used=8, sessions=4)]
    decisions = plan(NOW, [session(1)], fleet, [SMALL], Policy(max_workers=2))
    assert actions(decisions) == ["WAIT"] and "at its maximum of 2 workers" in decisions[0].reason
    decisions = plan(NOW, [session(i) for i in range(10)], [], [SMALL], Policy(max_workers=2))
    assert actions(decisions) == ["LAUNCH", "LAUNCH", "WAIT"]


def test_the_scale_up_cooldown_is_respected():
    last = {"us-east-1": NOW - timedelta(minutes=2)}
    decisions = plan(NOW, [session(1)], [], [SMALL], Policy(), last_scale_up=last)
    assert actions(decisions) == ["WAIT"] and "cooldown in us-east-1 until 12:03:00" in decisions[0].reason
    last = {"us-east-1": NOW - timedelta(minutes=6)}
    assert actions(plan(NOW, [session(1)], [], [SMALL], Policy(), last_scale_up=last)) == ["LAUNCH"]
    other = template("other-region", 8, 0.5, region="eu-west-1")
    decisions = plan(NOW, [session(1)], [], [SMALL, other], Policy(), last_scale_up={"us-east-1": NOW})
    assert actions(decisions) == ["LAUNCH"] and decisions[0].region == "eu-west-1"


def test_autoscaling_disabled_waits():
    decisions = plan(NOW, [session(1), session(2)], [], TEMPLATES, Policy(autoscaling_enabled=False))
    assert actions(decisions) == ["WAIT"]
    assert decisions[0].sessions == ("s1", "s2") and "autoscaling is disabled" in decisions[0].reason


# -- reviving what LCM stopped --------------------------------------------------------------


def test_a_worker_lcm_stopped_is_started_again_before_anything_is_launched():
    stopped = worker("w1", "STOPPED", desired="STOPPED", lcm_stopped=True)
    decisions = plan(NOW, [session(1), session(2)], [stopped], TEMPLATES, Policy(autoscaling_enabled=False))
    assert actions(decisions) == ["START"]
    assert decisions[0].worker_id == "w1" and decisions[0].sessions == ("s1", "s2")


def test_a_worker_an_admin_stopped_is_left_alone():
    stopped = worker("w1", "STOPPED", desired="STOPPED", lcm_stopped=False)
    assert actions(plan(NOW, [session(1)], [stopped], [SMALL], Policy())) == ["LAUNCH"]


def test_a_worker_lcm_is_draining_is_kept_instead():
    draining = worker("w1", "DRAINING", lcm_stopped=True)
    decisions = plan(NOW, [session(1)], [draining], [SMALL], Policy())
    assert actions(decisions) == ["CANCEL_DRAIN"] and decisions[0].worker_id == "w1"


def test_starting_a_stopped_worker_respects_the_maximum():
    fleet = [worker("w1", used=8, sessions=4), worker("w2", "STOPPED", desired="STOPPED", lcm_stopped=True)]
    decisions = plan(NOW, [session(1)], fleet, [SMALL], Policy(max_workers=1))
    assert actions(decisions) == ["WAIT"]


# -- scale down -----------------------------------------------------------------------------


def test_an_empty_unneeded_worker_drains():
    fleet = [worker("busy", used=2, sessions=1), worker("empty")]
    decisions = plan(NOW, [], fleet, [SMALL], Policy())
    assert actions(decisions) == ["DRAIN"] and decisions[0].worker_id == "empty"
    assert "has held no session for 60 min" in decisions[0].reason


def test_a_worker_a_pending_session_needs_is_kept():
    fleet = [worker("busy", cpu=2, used=2, sessions=1), worker("empty-a"), worker("empty-b")]
    decisions = plan(NOW, [session(1)], fleet, [SMALL], Policy())
    assert actions(decisions) == ["DRAIN"]
    assert decisions[0].worker_id == "empty-b"  # empty-a takes the pending session in memory (lowest id)


def test_scale_down_keeps_the_minimum_and_the_cooldown_after_a_scale_up():
    no_idle = Policy(idle_detection_enabled=False)
    assert plan(NOW, [], [worker("empty")], [SMALL], Policy(min_workers=1, idle_detection_enabled=False)) == []
    recent = {"us-east-1": NOW - timedelta(minutes=10)}
    assert plan(NOW, [], [worker("empty")], [SMALL], no_idle, last_scale_up=recent) == []
    other = {"eu-west-1": NOW}
    assert actions(plan(NOW, [], [worker("empty")], [SMALL], no_idle, last_scale_up=other)) == ["DRAIN"]
    fresh = worker("fresh", up_since=NOW - timedelta(minutes=5))  # came up within the cooldown
    assert plan(NOW, [], [fresh], [SMALL], no_idle) == []
    off = Policy(autoscaling_enabled=False, idle_detection_enabled=False)
    assert plan(NOW, [], [worker("empty")], [SMALL], off) == []


def test_nothing_drains_in_a_tick_that_scales_up():
    fleet = [worker("full", cpu=2, used=2, sessions=1), worker("empty", cpu=2, used=0)]
    big = Demand(cpu_cores=4, memory_gb=4, storage_gb=10, node_count=3, ports=3)
    assert actions(plan(NOW, [session(1, big)], fleet, [SMALL], Policy())) == ["LAUNCH"]


def test_longest_empty_drains_first_down_to_the_minimum():
    fleet = [
        worker("recent", empty_since=NOW - timedelta(minutes=20)),
        worker("old", empty_since=NOW - timedelta(hours=3)),
    ]
    decisions = plan(NOW, [], fleet, [SMALL], Policy(min_workers=1, idle_detection_enabled=False))
    assert [d.worker_id for d in decisions] == ["old"]


# -- idle pause -----------------------------------------------------------------------------


def test_an_idle_worker_is_paused_even_without_autoscaling():
    policy = Policy(autoscaling_enabled=False, idle_timeout=timedelta(minutes=30))
    idle = worker("idle", last_activity_at=NOW - timedelta(minutes=31))
    decisions = plan(NOW, [], [idle], [SMALL], policy)
    assert actions(decisions) == ["PAUSE"] and "for 31 min" in decisions[0].reason
    active = worker("active", last_activity_at=NOW - timedelta(minutes=5))  # CML activity (running nodes)
    assert plan(NOW, [], [active], [SMALL], policy) == []
    opted_out = worker("pinned", last_activity_at=NOW - timedelta(hours=2), idle_detection_enabled=False)
    assert plan(NOW, [], [opted_out], [SMALL], policy) == []
    assert plan(NOW, [], [idle], [SMALL], Policy(autoscaling_enabled=False, idle_detection_enabled=False)) == []


def test_the_ami_version_hint():
    assert ami_version_hint("cml-2.9*") == "2.9"
    assert ami_version_hint("cml-2.10.1-lcm") == "2.10.1"
    assert ami_version_hint("cml-*") == ""
