"""The scheduling benchmarks: their pure parts, small runs of both commands, and the lablet tick they measure."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from lcm.tools.bench import fixtures, packing
from scheduling.capacity import Demand, WorkerCapacity
from sessions.models import LabletDefinition, LabletSession
from sessions.reconcilers import sessions_needing_work
from tests.factories import DefinitionFactory, SessionFactory, WorkerFactory
from tests.support.commands import run_json
from workers.models import CMLWorker, SystemSettings

SMALL = Demand(1, 2, 5, 2, 2)


def _capacity(worker_id: str, cpu: int) -> WorkerCapacity:
    return WorkerCapacity(
        worker_id=worker_id, name=worker_id, status="RUNNING", license_type="ENTERPRISE", cml_version="2.9.0",
        cpu_total=cpu, memory_total=cpu * 4, storage_total=cpu * 50, nodes_total=cpu * 3, ports_total=8000,
    )  # fmt: skip


# --- pure parts -----------------------------------------------------------------------------


def test_the_lower_bound_counts_the_largest_workers_first_per_dimension():
    bound = packing.LowerBound([_capacity("a", 8), _capacity("b", 96), _capacity("c", 16)])
    assert bound((0, 0, 0, 0)) == 0
    assert bound((96, 1, 1, 1)) == 1
    assert bound.per_dimension((100, 1, 1, 1)) == {"cpu": 2, "memory": 1, "storage": 1, "nodes": 1}
    assert bound((120, 1, 1, 1)) == 3
    assert bound((121, 1, 1, 1)) == 4  # more than the whole fleet holds


def test_the_fleet_and_session_mixes_follow_their_shares():
    shapes = packing.fleet_shapes(500)
    assert len(shapes) == 500
    assert {name: shapes.count(name) for name, *_ in packing.FLEET_MIX} == {
        "cml-small": 100,
        "cml-medium": 200,
        "cml-large": 200,
    }
    capacities = packing.fleet_capacities(10)
    assert sorted(c.worker_id for c in capacities) == [c.worker_id for c in capacities]
    assert packing.session_kinds(50, seed=3) == packing.session_kinds(50, seed=3)


def test_peers_first_fit_takes_the_first_worker_and_spreading_the_emptiest():
    fleet = [_capacity("1", 16), _capacity("2", 16)]
    first, spread = packing.FirstFit(fleet), packing.Spread(fleet)
    for policy in (first, spread):
        policy.claim(policy.choose(SMALL), SMALL)
    assert first.choose(SMALL) == "1"
    assert spread.choose(SMALL) == "2"


def test_a_timeline_frees_capacity_when_sessions_leave():
    fleet = [_capacity("1", 2)]
    bookings = [packing.Booking(0, 30, SMALL), packing.Booking(10, 30, SMALL), packing.Booking(35, 30, SMALL)]
    run = packing.run_timeline(packing.BestFit(fleet), bookings, packing.LowerBound(fleet))
    assert run.placed == 3  # the third arrives after the first left
    assert (run.peak_used, run.peak_bound, run.peak_ratio) == (1, 1, 1.0)
    full = packing.run_timeline(
        packing.BestFit(fleet), [packing.Booking(i, 30, SMALL) for i in range(3)], packing.LowerBound(fleet)
    )
    assert full.placed == 2


def test_best_fit_packs_a_heterogeneous_fleet_to_its_lower_bound():
    capacities = packing.fleet_capacities(60)
    demands = [packing.DEMANDS[k] for k in packing.session_kinds(1000)]
    bound = packing.LowerBound(capacities)
    ours = packing.run_batch(packing.BestFit(capacities), demands, bound)
    first_fit = packing.run_batch(packing.FirstFit(capacities), demands, bound)
    assert ours.placed == first_fit.placed == 1000
    assert ours.workers_used <= ours.lower_bound * 1.07 < first_fit.workers_used


# --- bench_placement --------------------------------------------------------------------------


@pytest.mark.django_db
def test_bench_placement_small_run_places_everything_and_leaves_nothing_behind():
    workers_before, definitions_before = CMLWorker.objects.count(), LabletDefinition.objects.count()
    result = run_json(
        "bench_placement", "--sessions", "300", "--workers", "30", "--hours", "2", "--peer-sessions", "20"
    )
    names = [run["policy"] for run in result["batch"]]
    assert names[0] == "best fit (LCM)" and "first fit (peer)" in names and "spreading (peer)" in names
    ours = result["batch"][0]
    assert ours["placed"] == 300 and ours["ratio"] <= 1.07
    assert result["timeline"]["runs"][0]["peak_ratio"] <= 1.07
    database = result["database"]
    assert database["placed"] == 300 and database["ticks"] == 1
    assert len(database["queries_per_tick"]) == 1
    assert database["checks"]["history_matches"] and database["checks"]["workers_over_capacity"] == []
    assert database["checks"]["workers_used"] == ours["workers_used"]
    assert database["peer"]["placed"] == 20
    assert result["targets_met"]["no_overbooking"] and result["targets_met"]["history_rows"]
    assert CMLWorker.objects.count() == workers_before
    assert LabletDefinition.objects.count() == definitions_before
    assert not LabletSession.objects.filter(owner__startswith="bench-").exists()


def test_bench_placement_prints_figures_beside_its_peers_in_memory():
    out = StringIO()
    call_command("bench_placement", "--sessions", "200", "--workers", "20", "--memory-only", stdout=out)
    text = out.getvalue()
    for expected in ("decisions/s", "lower bound", "first fit (peer)", "spreading (peer)", "peak bound", "targets"):
        assert expected in text


def test_bench_placement_rejects_bad_sizes():
    with pytest.raises(CommandError, match="--workers must be between"):
        call_command("bench_placement", "--workers", "0", stdout=StringIO())


# --- bench_reconcile ------------------------------------------------------------------------


@pytest.mark.django_db
def test_bench_reconcile_smallrun_json():
    sessions_before = LabletSession.objects.count()
    result = run_json(
        "bench_reconcile", "--sessions", "400", "--small", "100", "--repeat", "3", "--passes", "20", "--samples", "20"
    )
    small, large = result["sizes"]
    assert (small["sessions"], large["sessions"]) == (100, 400)
    assert small["tick"]["queries"] == large["tick"]["queries"] == [1]
    assert small["tick"]["exactly_the_changed"] and large["tick"]["exactly_the_changed"]
    assert large["changed_pass"]["count"] == large["changed"] == 4
    assert large["idle_pass"]["count"] == 20
    assert result["polling_peer"]["interval_s"] > 0
    watch = result["watch"]
    if fixtures.etcd_binary() is None:
        assert "skipped" in watch
    else:
        assert watch["samples"] == 20 and watch["lost"] == 0
    assert LabletSession.objects.count() == sessions_before  # rolled back


# --- the tick it measures: one query, idle sessions left out -----------------------------------


@pytest.mark.django_db
def test_the_lablet_tick_is_one_query_and_applies_each_boot_lead():
    now = timezone.now()
    worker = WorkerFactory()
    own_lead = DefinitionFactory(boot_lead_minutes=60)
    global_lead = DefinitionFactory(boot_lead_minutes=None)
    settings_row = SystemSettings.load()
    due_own = SessionFactory(
        definition=own_lead, status="SCHEDULED", worker=worker, timeslot_start=now + timedelta(minutes=50)
    )
    early_own = SessionFactory(
        definition=own_lead, status="SCHEDULED", worker=worker, timeslot_start=now + timedelta(minutes=70)
    )
    due_global = SessionFactory(
        definition=global_lead, status="SCHEDULED", worker=worker, timeslot_start=now + timedelta(minutes=15)
    )
    early_global = SessionFactory(
        definition=global_lead, status="SCHEDULED", worker=worker, timeslot_start=now + timedelta(minutes=30)
    )
    with CaptureQueriesContext(connection) as captured:
        keys = set(sessions_needing_work(now))
    assert len(captured.captured_queries) == 1
    assert keys == {due_own.pk, due_global.pk}
    settings_row.boot_lead_minutes = 45
    settings_row.save()
    assert set(sessions_needing_work(now)) == {due_own.pk, due_global.pk, early_global.pk}
    assert early_own.pk not in set(sessions_needing_work(now))


@pytest.mark.django_db
def test_the_lablet_tick_leaves_out_idle_and_clean_sessions():
    now = timezone.now()
    worker, draining = WorkerFactory(), WorkerFactory(status="DRAINING")
    past = {"timeslot_start": now - timedelta(hours=2), "timeslot_end": now - timedelta(hours=1)}
    current = {"timeslot_start": now - timedelta(minutes=10), "timeslot_end": now + timedelta(minutes=50)}
    idle = [
        SessionFactory(status="PENDING", timeslot_start=now + timedelta(hours=2)),
        SessionFactory(status="SCHEDULED", worker=worker, timeslot_start=now + timedelta(hours=3)),
        SessionFactory(status="READY", worker=worker, **current),
        SessionFactory(status="RUNNING", worker=worker, **current),
        SessionFactory(status="ARCHIVED", worker=worker, **past),
        SessionFactory(status="TERMINATED", cleanup_pending=False, **past),
        SessionFactory(status="EXPIRED", cleanup_pending=False, **past),  # expired before placement: nothing held
        SessionFactory(
            status="INSTANTIATING", worker=worker, next_attempt_at=now + timedelta(minutes=1)
        ),  # backing off
    ]
    needing = [
        SessionFactory(status="PENDING", **past),
        SessionFactory(status="READY", worker=worker, **past),
        SessionFactory(status="RUNNING", worker=worker, **past),
        SessionFactory(status="SCHEDULED", worker=draining, timeslot_start=now + timedelta(hours=3)),
        SessionFactory(status="INSTANTIATING", worker=worker),
        SessionFactory(status="STOPPED", worker=worker, **past),
        SessionFactory(status="EXPIRED", worker=worker, cleanup_pending=True, **past),
        SessionFactory(status="TERMINATED", worker=worker, cleanup_pending=True, **past),
    ]
    keys = set(sessions_needing_work(now))
    assert keys == {s.pk for s in needing}
    assert not keys & {s.pk for s in idle}
