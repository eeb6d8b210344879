"""`manage.py bench_autoscale`: a booking trace replayed through the pure autoscaler and placement on a simulated
clock; sessions booked at least the placement lead ahead are READY on time and worker-hours stay within 1.10 of the
ideal capacity curve computed in the same run."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from lcm.tools.bench.autoscale import DEFAULT_TRACE, choose_template
from lcm.tools.bench.autoscale_sim import Booking, generate_trace, ideal_workers, read_trace, replay
from scheduling.capacity import Demand
from workers.autoscaler import Policy, TemplateOption

SMALL = TemplateOption("t", "small", "us-east-1", "ENTERPRISE", 8, 32, 200, 20, 8000, 8, 0.384, "2.9")
LAB = Demand(2, 4, 10, 3, 3)


def test_the_ideal_curve_is_the_per_dimension_lower_bound():
    assert ideal_workers([], SMALL) == 0
    assert ideal_workers([LAB] * 4, SMALL) == 1
    assert ideal_workers([LAB] * 5, SMALL) == 2  # 10 CPU on 8-CPU workers
    assert ideal_workers([Demand(1, 1, 1, 15, 1)] * 2, SMALL) == 2  # 30 nodes on 20-node workers


def test_a_single_booking_is_served_on_time_by_one_worker():
    figures = replay([Booking(0, 120, 60, LAB)], SMALL, Policy(idle_detection_enabled=False))
    assert figures["booked_ahead_ready_on_time"] == figures["booked_ahead"] == 1
    assert figures["workers_launched"] == 1 and figures["decisions"]["LAUNCH"] == 1
    # Launched at placement (35 min ahead), stopped 2 min after the 1-minute teardown: 35 + 60 + 1 + 2 minutes.
    assert figures["worker_hours"] == pytest.approx(98 / 60, abs=0.02)
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


def test_the_shipped_day_trace_meets_both_targets():
    figures = replay(read_trace(DEFAULT_TRACE), SMALL, Policy(max_workers=1000, idle_detection_enabled=False))
    assert figures["booked_ahead"] > 300 and figures["on_time_percent"] == 100.0
    assert figures["ratio"] <= 1.10


@pytest.mark.django_db
def test_the_command_prints_the_figures_and_the_peer(tmp_path):
    path = tmp_path / "short.csv"
    generate_trace(path, sessions=80, seed=5)
    out = StringIO()
    call_command("bench_autoscale", "--trace", str(path), stdout=out)
    text = out.getvalue()
    assert "READY before their start (100.0%" in text
    assert "vs ideal capacity curve" in text and "ratio" in text
    assert "template cml-small" in text  # what the autoscaler launches for these bookings
    assert text.strip().endswith("targets met")

    out = StringIO()
    call_command("bench_autoscale", "--trace", str(path), "--template", "cml-medium", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["template"] == "cml-medium" and data["sessions"] == 80
    assert {"worker_hours", "ideal_worker_hours", "ratio", "on_time_percent", "curve"} <= set(data)


def test_the_shipped_day_trace_is_readable():
    bookings = read_trace(DEFAULT_TRACE)
    assert len(bookings) == 400
    day = [b.start for b in bookings]
    assert min(day) >= 7 * 60 and max(day) <= 19 * 60
    assert sum(1 for b in bookings if b.start - b.booked >= 35) > 300


def test_the_default_template_is_what_the_autoscaler_launches():
    big = TemplateOption("b", "big", "us-east-1", "ENTERPRISE", 32, 128, 800, 100, 8000, 12, 1.536, "2.9")
    assert choose_template([Booking(0, 60, 60, LAB)], [big, SMALL], None) == SMALL
    huge = Demand(16, 64, 100, 30, 3)
    assert choose_template([Booking(0, 60, 60, huge)], [big, SMALL], None) == big
    assert choose_template([Booking(0, 60, 60, LAB)], [big, SMALL], "big") == big
    with pytest.raises(ValueError, match="no enabled worker template named 'nope'"):
        choose_template([Booking(0, 60, 60, LAB)], [SMALL], "nope")


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
