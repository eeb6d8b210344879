"""`manage.py bench_autoscale` (SPEC §10): booking traces replayed on a simulated clock through LCM's autoscaler
(forecast planning, end-time aware placement) beside a static fleet sized for the peak and a reactive 80/20
scaler; sessions booked at least the placement lead ahead are READY on time and LCM costs less than both peers."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from lcm.tools.bench.autoscale import DEFAULT_TRACE, DEFAULT_TRACES, compare, static_size
from lcm.tools.bench.autoscale_peers import LcmScaler, ReactiveScaler
from lcm.tools.bench.autoscale_sim import Leads, Replay, boot_floor, ideal_workers, replay
from lcm.tools.bench.autoscale_traces import EXAM_TIMES, Booking, generate_exam_day, generate_trace, read_trace
from scheduling.capacity import Demand
from workers.autoscaler import Policy, TemplateOption

SMALL = TemplateOption("t", "small", "us-east-1", "ENTERPRISE", 8, 32, 200, 20, 8000, 8, 0.384, "2.9")
LAB = Demand(2, 4, 10, 3, 3)


def test_the_ideal_curve_is_the_per_dimension_lower_bound():
    assert ideal_workers([], SMALL) == 0
    assert ideal_workers([LAB] * 4, SMALL) == 1
    assert ideal_workers([LAB] * 5, SMALL) == 2  # 10 CPU on 8-CPU workers
    assert ideal_workers([Demand(1, 1, 1, 15, 1)] * 2, SMALL) == 2  # 30 nodes on 20-node workers


def test_a_single_booking_is_served_on_time_by_one_worker_ready_by_the_placement_lead():
    figures = replay([Booking(0, 120, 60, LAB)], SMALL, Policy(idle_detection_enabled=False))
    assert figures["booked_ahead_ready_on_time"] == figures["booked_ahead"] == 1
    assert figures["workers_launched"] == 1 and figures["decisions"]["LAUNCH"] == 1
    # Launched its 8-minute boot before the placement lead (35 min ahead), stopped 2 min after the 1-minute
    # teardown: 8 + 35 + 60 + 1 + 2 minutes.
    assert figures["worker_hours"] == pytest.approx(106 / 60, abs=0.02)
    assert figures["ideal_worker_hours"] == pytest.approx(96 / 60, abs=0.02)


def test_a_short_generated_trace_is_served_on_time_near_the_ideal(tmp_path):
    path = tmp_path / "short.csv"
    generate_trace(path, sessions=120, seed=3)
    bookings = read_trace(path)
    assert len(bookings) == 120
    figures = replay(bookings, SMALL, Policy(max_workers=1000, idle_detection_enabled=False))
    assert figures["on_time_percent"] == 100.0
    # A short day has relatively more ramp-up and ramp-down than the shipped one, hence the looser bound here.
    assert figures["ideal_worker_hours"] <= figures["worker_hours"] <= 1.15 * figures["ideal_worker_hours"]


def test_the_shipped_traces_are_readable():
    day = read_trace(DEFAULT_TRACE)
    assert len(day) == 400
    assert min(b.start for b in day) >= 7 * 60 and max(b.start for b in day) <= 19 * 60
    assert sum(1 for b in day if b.start - b.booked >= 35) > 300
    exam = read_trace(DEFAULT_TRACES[1])
    cohorts = {}
    for b in exam:
        if b.booked == 0 and b.start in EXAM_TIMES:
            cohorts[b.start] = cohorts.get(b.start, 0) + 1
    assert set(cohorts) == set(EXAM_TIMES) and all(30 <= n <= 120 for n in cohorts.values())
    assert sum(1 for b in exam if b.start - b.booked <= 30) >= 100  # the walk-ins


def test_the_exam_day_generator_is_seeded(tmp_path):
    generate_exam_day(tmp_path / "a.csv", seed=11)
    assert (tmp_path / "a.csv").read_text() == DEFAULT_TRACES[1].read_text()  # the shipped trace is seed 11
    generate_exam_day(tmp_path / "b.csv", seed=12)
    assert (tmp_path / "b.csv").read_text() != DEFAULT_TRACES[1].read_text()


def test_lcm_beats_the_static_and_reactive_peers_on_a_cohort(tmp_path):
    cohort = [Booking(0, 600, 120, LAB)] * 60 + [Booking(0, 900, 60, LAB)] * 20
    leads = Leads()
    lcm = Replay(cohort, [SMALL], LcmScaler(Policy(max_workers=1000, idle_detection_enabled=False)), leads).run()
    size, static = static_size(cohort, SMALL, leads)
    reactive = Replay(cohort, [SMALL], ReactiveScaler(SMALL), leads).run()
    assert size == 15  # 60 labs of 2 CPU on 8-CPU workers
    assert lcm["on_time_percent"] == static["on_time_percent"] == 100.0
    assert lcm["cost"] < static["cost"] and lcm["cost"] < reactive["cost"]
    # The cohort's 15 workers boot before its placement lead: the pre-warm of an exam.
    assert lcm["decisions"]["LAUNCH"] >= 15 and lcm["peak_workers"] == 15


def test_the_mixed_fleet_costs_no_more_than_the_cheapest_template():
    big = TemplateOption("b", "big", "us-east-1", "ENTERPRISE", 32, 128, 800, 80, 8000, 12, 1.536, "2.9")
    bookings = [Booking(0, 600, 90, LAB)] * 37 + [Booking(0, 700, 60, LAB)] * 9
    options = {"max_workers": 1000, "scale_up_cooldown": None, "scale_down_cooldown": None}
    rows = compare("t", bookings, [("small", [SMALL]), ("big", [big]), ("mixed", [SMALL, big])], Leads(), options)
    cost = {(r["fleet"], r["policy"]): r["cost"] for r in rows}
    assert cost[("mixed", "LCM")] <= min(cost[("small", "LCM")], cost[("big", "LCM")])
    assert {p.split(":")[0] for f, p in cost if f == "mixed"} == {"LCM", "static", "reactive"}  # best single peers


@pytest.mark.django_db
def test_the_command_prints_the_table_and_the_targets(tmp_path):
    path = tmp_path / "short.csv"
    generate_trace(path, sessions=80, seed=5)
    out = StringIO()
    call_command("bench_autoscale", "--trace", str(path), "--template", "cml-small", stdout=out)
    text = out.getvalue()
    for policy in ("LCM", "static (", "reactive 80/20"):
        assert policy in text
    assert "ratio" in text and "worker-h" in text and "LCM targets" in text
    assert text.strip().endswith(("targets met", "TARGETS MISSED"))

    out = StringIO()
    call_command("bench_autoscale", "--trace", str(path), "--template", "cml-medium", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert [r["policy"] for r in data["rows"]][0] == "LCM" and data["rows"][0]["sessions"] == 80
    assert {"worker_hours", "ideal_worker_hours", "ratio", "on_time_percent", "walk_ins_percent", "cost"} <= set(
        data["rows"][0]
    )
    with pytest.raises(CommandError, match="no enabled worker template named 'nope'"):
        call_command("bench_autoscale", "--trace", str(path), "--template", "nope", stdout=StringIO())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no bookings"),
        ("0,60,sixty,2,4,10,3,3,\n", "line 1: expected booked_minute"),
        ("90,60,60,2,4,10,3,3,\n", "line 1: needs duration > 0, booked ≤ start"),
    ],
)
def test_bad_traces_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("bench_autoscale", "--trace", str(path), stdout=StringIO())
    with pytest.raises(CommandError, match="cannot read"):
        call_command("bench_autoscale", "--trace", str(tmp_path / "missing.csv"), stdout=StringIO())


def test_policy_cooldowns_come_from_the_options(tmp_path):
    path = tmp_path / "short.csv"
    generate_trace(path, sessions=40, seed=1)
    bookings = read_trace(path)
    slow = replay(bookings, SMALL, Policy(scale_down_cooldown=timedelta(hours=6), idle_detection_enabled=False))
    fast = replay(bookings, SMALL, Policy(scale_down_cooldown=timedelta(0), idle_detection_enabled=False))
    assert slow["worker_hours"] > fast["worker_hours"]


def test_the_boot_floor_bills_each_level_one_boot_and_bridges_short_gaps():
    # One worker needed for 3 ticks, then 2 idle ticks, then 1: with a boot plus a stop of 3, staying up through
    # the gap (2) is cheaper than stopping and booting again (3); with 1, booting again is.
    assert boot_floor([1, 1, 0, 0, 1], overhead=3, tick=1) == 3 + 3 + 2
    assert boot_floor([1, 1, 0, 0, 1], overhead=1, tick=1) == 3 + 1 + 1
    # Two levels: the second worker is needed for one tick only and pays a whole overhead for it.
    assert boot_floor([1, 2, 1], overhead=5, tick=1) == (3 + 5) + (1 + 5)
    assert boot_floor([], overhead=5, tick=1) == boot_floor([0, 0], overhead=5, tick=1) == 0


def test_lcm_bills_the_boot_floor_on_a_single_booking_and_never_less_on_a_day(tmp_path):
    figures = replay([Booking(0, 120, 60, LAB)], SMALL, Policy(idle_detection_enabled=False))
    # The one worker's boot (8) and stop (2) on top of the ideal 96 minutes: LCM spends exactly the floor.
    assert figures["floor_worker_hours"] == pytest.approx(106 / 60, abs=0.01) == figures["worker_hours"]
    assert figures["floor_ratio"] == pytest.approx(106 / 96, abs=0.001)
    path = tmp_path / "short.csv"
    generate_trace(path, sessions=120, seed=3)
    day = replay(read_trace(path), SMALL, Policy(max_workers=1000, idle_detection_enabled=False))
    assert day["ideal_worker_hours"] < day["floor_worker_hours"] <= day["worker_hours"]


@pytest.mark.django_db
def test_the_command_says_when_no_policy_can_meet_the_ratio_target(tmp_path):
    """One 90-minute lab on a 15-minute-boot template: the boot and the stop alone are 17/126 of the ideal curve,
    so the ratio target is out of any policy's reach, and the targets line says so with the floor."""
    path = tmp_path / "one.csv"
    path.write_text("booked_minute,start_minute,duration_minutes,cpu_cores,memory_gb,storage_gb,node_count,ports,license\n"
                    "0,600,90,2,4,10,3,3,\n")  # fmt: skip
    out = StringIO()
    call_command("bench_autoscale", "--trace", str(path), "--template", "cml-large", stdout=out)
    text = out.getvalue()
    assert "vs floor" in text
    assert "MISSED: ratio <= 1.08 (the floor is 1.135: no policy can meet it; LCM is 1.000 x the floor)" in text
