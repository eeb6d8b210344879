"""Placement core: filters of SPEC §3.2 and best-fit scoring, pure and through the preview selector."""

import pytest

from lcm.versions import version_key
from scheduling.capacity import Demand, WorkerCapacity
from scheduling.placement import choose_worker, preview
from scheduling.selectors import placement_preview
from tests.factories import DefinitionFactory, LabRecordFactory, SessionFactory, WorkerFactory

DEMAND = Demand(cpu_cores=2, memory_gb=4, storage_gb=10, node_count=2, ports=3)


def cap(worker_id, **overrides):
    base = dict(
        worker_id=worker_id, name=f"w{worker_id}", status="RUNNING", license_type="ENTERPRISE", cml_version="2.9.0",
        cpu_total=16, memory_total=64, storage_total=400, nodes_total=60, ports_total=8000,
    )  # fmt: skip
    return WorkerCapacity(**(base | overrides))


def test_best_fit_prefers_the_fullest_worker_that_fits():
    empty, busy, full = cap("1"), cap("2", cpu_used=10, memory_used=40), cap("3", cpu_used=15)
    chosen = choose_worker([empty, busy, full], DEMAND)
    assert chosen.worker_id == "2"
    ranked = preview([empty, busy, full], DEMAND)
    assert [c.worker_id for c in ranked] == ["2", "1", "3"]
    assert "cpu" in ranked[-1].reason


def test_ties_go_to_a_reusable_lab_then_lowest_id():
    a, b = cap("a"), cap("b")
    assert choose_worker([b, a], DEMAND).worker_id == "a"
    assert choose_worker([a, b], DEMAND, reusable_on=frozenset({"b"})).worker_id == "b"


def test_filters_status_version_and_licence():
    ranked = preview(
        [cap("1", status="DRAINING"), cap("2", cml_version="2.8.1"), cap("3", license_type="EVALUATION")],
        Demand(1, 1, 1, 1, 0, ("ENTERPRISE",)),
        cml_version_min="2.9",
    )
    reasons = {c.worker_id: c.reason for c in ranked}
    assert "not RUNNING" in reasons["1"]
    assert "older than 2.9" in reasons["2"]
    assert "licence" in reasons["3"]
    assert choose_worker([cap("x", cml_version="2.10.0")], DEMAND, cml_version_max="2.9") is None
    assert choose_worker([cap("x", cml_version="2.10.0")], DEMAND, cml_version_min="2.9").worker_id == "x"


def test_versions_compare_numerically():
    assert version_key("2.10") > version_key("2.9")


@pytest.mark.django_db
def test_placement_preview_reads_capacity_and_reusable_labs():
    definition = DefinitionFactory(cpu_cores=4)
    busy, idle = WorkerFactory(name="busy"), WorkerFactory(name="idle")
    SessionFactory(definition=definition, status="RUNNING", worker=busy)
    LabRecordFactory(worker=idle, definition=definition, status="WIPED")
    ranked = placement_preview(definition)
    assert ranked[0].name == "busy"
    assert next(c for c in ranked if c.name == "idle").reusable_lab


def test_end_time_aware_placement_co_locates_sessions_that_end_together():
    from scheduling.placement import Fleet, end_extension

    early, late = cap("early", cpu_used=10, memory_used=40), cap("late", cpu_used=4, memory_used=16)
    ends = {"early": 60.0, "late": 180.0}  # the latest end of what each holds (minutes on a clock)
    # Plain best fit takes the fuller worker; a session ending at 170 would keep it busy 110 more minutes.
    assert choose_worker([early, late], DEMAND).worker_id == "early"
    assert choose_worker([early, late], DEMAND, session_end=170.0, worker_ends=ends, now=0.0).worker_id == "late"
    # A session ending before the early worker empties goes there: it extends nothing, and it is fuller.
    assert choose_worker([early, late], DEMAND, session_end=55.0, worker_ends=ends, now=0.0).worker_id == "early"
    assert end_extension(None, 30.0, 0.0) == 2 and end_extension(90.0, 80.0, 0.0) == 0
    # The in-memory Fleet of the scheduler decides exactly like choose_worker, with ends as without.
    for session_end in (10.0, 55.0, 61.0, 100.0, 170.0, 400.0):
        fleet = Fleet([early, late, cap("empty")])
        chosen = fleet.choose(DEMAND, session_end=session_end, worker_ends=ends, now=0.0)
        expected = choose_worker(
            [early, late, cap("empty")], DEMAND, session_end=session_end, worker_ends=ends, now=0.0
        )
        assert chosen.worker_id == expected.worker_id, session_end
