"""Planning from the forecast, as the production tick and `bench_autoscale` both run it (`workers.autoscaler.
plan_ahead`, `after_leaving`, `walk_in_reserve`): a launch is made a boot before its session's placement moment,
never earlier and never for the walk-in reserve alone; capacity that frees before a launch would land serves the
demand instead; room is kept for the walk-ins the last hour says will come. The rules first on plain data, then
through `autoscale_tick` on the database."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from scheduling.capacity import Demand
from sessions.models import LabletSession
from tests.factories import DefinitionFactory, SessionFactory, WorkerFactory
from workers.autoscaler import (
    STOP_MINUTES,
    PendingSession,
    Policy,
    TemplateOption,
    WorkerState,
    after_leaving,
    keep_horizon,
    plan_ahead,
    walk_in_reserve,
)
from workers.autoscaling import autoscale_tick
from workers.models import CMLWorker, SystemSettings, WorkerTemplate

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LAB = Demand(4, 8, 20, 6, 5)
SMALL = TemplateOption("t-small", "small", "r1", "ENTERPRISE", 8, 32, 200, 20, 100, 8, 0.384, "2.9")
POLICY = Policy(min_workers=0, max_workers=50, scale_up_cooldown=timedelta(0), scale_down_cooldown=timedelta(0))


def running(worker_id: str, *, used: int = 0, empty_since=NOW - timedelta(hours=1)) -> WorkerState:
    capacity = SMALL.capacity(worker_id, worker_id)
    for _ in range(used):
        capacity = capacity.claimed(LAB)
    return WorkerState(capacity, "r1", empty_since=empty_since, up_since=NOW - timedelta(hours=2))


def session(sid: str, due_in: int) -> PendingSession:
    due = NOW + timedelta(minutes=due_in)
    return PendingSession(sid, LAB, due + timedelta(minutes=35), due=due)


# --- the rules on plain data -----------------------------------------------------------------------------------


def test_a_launch_is_made_exactly_a_boot_before_the_placement_moment_not_earlier():
    early = plan_ahead(NOW, [session("s1", SMALL.startup_minutes + 1)], [], [SMALL], POLICY)
    assert [d.action for d in early] == []  # launched now it would idle a minute: the next tick launches it
    on_time = plan_ahead(NOW, [session("s1", SMALL.startup_minutes)], [], [SMALL], POLICY)
    assert [(d.action, d.sessions) for d in on_time] == [("LAUNCH", ("s1",))]


def test_capacity_that_frees_before_a_launch_lands_serves_the_demand_instead():
    full = running("w1", used=2)  # two labs fill a small worker's CPU
    leaving = [(LAB, NOW + timedelta(minutes=5)), (LAB, NOW + timedelta(minutes=90))]
    until = NOW + timedelta(minutes=SMALL.startup_minutes)
    seen = after_leaving(full, leaving, until)
    assert (seen.capacity.cpu_used, seen.capacity.sessions) == (4, 1)
    assert after_leaving(full, leaving, NOW + timedelta(minutes=4)) is full  # nothing has left by then
    assert plan_ahead(NOW, [session("s1", 0)], [seen], [SMALL], POLICY) == []
    assert [d.action for d in plan_ahead(NOW, [session("s1", 0)], [full], [SMALL], POLICY)] == ["LAUNCH"]


def test_the_walk_in_reserve_is_sized_from_the_last_hours_walk_ins_only():
    horizon = timedelta(minutes=8)
    small, big = Demand(2, 4, 10, 3, 3), Demand(8, 16, 40, 12, 8)
    recent = [
        (NOW - timedelta(minutes=m), NOW - timedelta(minutes=m) + timedelta(minutes=5), small) for m in range(0, 50, 5)
    ]  # ten walk-ins in the hour, each booked 5 minutes before its start
    recent.append((NOW - timedelta(minutes=20), NOW - timedelta(minutes=15), big))
    recent.append((NOW - timedelta(minutes=10), NOW + timedelta(hours=3), big))  # booked ahead: not a walk-in
    recent.append((NOW - timedelta(minutes=61), NOW - timedelta(minutes=58), big))  # before the window
    reserve = walk_in_reserve(NOW, recent, horizon)
    # 11 walk-ins per 60 minutes, over a boot plus an instantiation (10 minutes): 2, at the median one's size.
    assert len(reserve) == 2 and {r.demand for r in reserve} == {small} and all(r.reserve for r in reserve)
    bigger = [(booked, start, big) for booked, start, _ in recent[:6]] + recent[6:]  # now most walk-ins are big
    assert {r.demand for r in walk_in_reserve(NOW, bigger, horizon)} == {big}
    assert walk_in_reserve(NOW, recent[-2:], horizon) == []


def test_the_reserve_keeps_an_empty_worker_and_launches_nothing():
    reserve = walk_in_reserve(NOW, [(NOW - timedelta(minutes=1), NOW + timedelta(minutes=2), LAB)], timedelta(8))
    empty = running("w1")
    assert [d.action for d in plan_ahead(NOW, [], [empty], [SMALL], POLICY)] == ["DRAIN"]
    assert plan_ahead(NOW, [], [empty], [SMALL], POLICY, reserve=reserve) == []
    assert plan_ahead(NOW, [], [], [SMALL], POLICY, reserve=reserve) == []  # no worker: no launch for it


# --- through the production tick -------------------------------------------------------------------------------


@pytest.fixture
def scaling(db):
    system = SystemSettings.load()
    system.autoscaling_enabled = True
    system.max_workers_per_region = 50
    system.scale_up_cooldown_minutes = 0
    system.scale_down_cooldown_minutes = 0
    system.idle_detection_enabled = False
    system.save()
    return min(t.startup_minutes for t in WorkerTemplate.objects.filter(enabled=True))


def _holding(worker, definition, *, start, end, booked):
    held = SessionFactory(definition=definition, worker=worker, status="READY", timeslot_start=start, timeslot_end=end)
    LabletSession.objects.filter(pk=held.pk).update(created_at=booked)
    return held


@pytest.mark.parametrize(("ends_in", "launches"), [(-1, False), (+1, True)])
def test_the_tick_launches_nothing_when_a_session_leaves_before_the_launch_would_land(scaling, ends_in, launches):
    now = timezone.now()
    boot = scaling
    definition = DefinitionFactory(cpu_cores=4, memory_gb=8)
    worker = WorkerFactory(cpu_cores=4, memory_gb=8)  # full with one session
    earlier = now - timedelta(hours=2)
    _holding(worker, definition, start=earlier, end=now + timedelta(minutes=boot + ends_in), booked=earlier)
    lead = SystemSettings.load().placement_lead_minutes
    pending = SessionFactory(definition=definition, timeslot_start=now + timedelta(minutes=lead + 1))
    LabletSession.objects.filter(pk=pending.pk).update(created_at=earlier)

    decisions = autoscale_tick(now=now, require_leader=False)

    assert [d.action for d in decisions] == (["LAUNCH"] if launches else [])
    assert CMLWorker.objects.count() == (2 if launches else 1)


@pytest.mark.parametrize(("booked_minutes_ago", "drained"), [(10, False), (120, True)])
def test_the_tick_keeps_an_empty_worker_for_the_last_hours_walk_ins(scaling, booked_minutes_ago, drained):
    now = timezone.now()
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    busy = WorkerFactory(cpu_cores=6, memory_gb=12)
    spare = WorkerFactory()
    booked = now - timedelta(minutes=booked_minutes_ago)
    for _ in range(3):  # walk-ins: booked 5 minutes before their start, placed on the busy worker
        _holding(busy, definition, start=booked + timedelta(minutes=5), end=now + timedelta(hours=1), booked=booked)

    decisions = autoscale_tick(now=timezone.now(), require_leader=False)  # after the workers came up

    assert [(d.action, d.worker_name) for d in decisions] == ([("DRAIN", spare.name)] if drained else [])
    assert CMLWorker.objects.count() == 2  # the reserve launches nothing


def test_the_reserve_takes_only_the_room_booked_sessions_leave():
    capacity = dataclasses.replace(SMALL.capacity("w1", "w1").claimed(LAB), status="STARTING")  # room for one lab
    coming = WorkerState(capacity, "r1", empty_since=NOW, up_since=NOW)
    reserve = walk_in_reserve(NOW, [(NOW - timedelta(minutes=1), NOW + timedelta(minutes=2), LAB)], timedelta(8))
    assert reserve and reserve[0].start < NOW + timedelta(minutes=35)  # it "starts" before the booked session
    # Yet the booked session gets the coming worker's room, and nothing launches for the reserve.
    assert plan_ahead(NOW, [session("s1", 0)], [coming], [SMALL], POLICY, reserve=reserve) == []


@pytest.mark.parametrize(("due_after_boot", "drained"), [(STOP_MINUTES, False), (STOP_MINUTES + 2, True)])
def test_the_tick_keeps_an_empty_worker_a_booking_needs_within_a_boot_and_a_stop(scaling, due_after_boot, drained):
    """Stopping a worker and booting one again bills a stop and a boot: an empty worker whose next booking is
    placed within that time waits RUNNING for it (`keep_horizon`); a later booking lets it drain now."""
    now = timezone.now()
    boot = scaling
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4)
    spare = WorkerFactory()
    lead = SystemSettings.load().placement_lead_minutes
    pending = SessionFactory(
        definition=definition, timeslot_start=now + timedelta(minutes=lead + boot + due_after_boot)
    )
    LabletSession.objects.filter(pk=pending.pk).update(created_at=now - timedelta(hours=3))

    decisions = autoscale_tick(now=timezone.now(), require_leader=False)

    assert [(d.action, d.worker_name) for d in decisions] == ([("DRAIN", spare.name)] if drained else [])
    assert keep_horizon(boot) == timedelta(minutes=boot + STOP_MINUTES)
