"""Free capacity per worker: one query, derived from the sessions holding capacity (SPEC §2.2)."""

import pytest

from scheduling.capacity import Demand, WorkerCapacity, fit_reason, licence_serves, rejection_reason, version_reason
from scheduling.selectors import worker_capacities
from sessions.services import session_cleanup_finished
from tests.factories import DefinitionFactory, LabRecordFactory, SessionFactory, WorkerFactory
from workers.port_services import ports_allocate


@pytest.mark.django_db
def test_capacity_of_every_worker_in_one_query_and_one_per_other_holder(django_assert_num_queries):
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4, storage_gb=10)
    busy, idle = WorkerFactory(), WorkerFactory()
    for status in ("SCHEDULED", "RUNNING", "GRADING", "STOPPING"):
        SessionFactory(definition=definition, status=status, worker=busy)
    SessionFactory(definition=definition, status="EXPIRED", worker=busy, cleanup_pending=True)
    # An expired session whose teardown is done (or that never had a lab) holds nothing.
    SessionFactory(definition=definition, status="EXPIRED", worker=busy, cleanup_pending=False)
    # These hold nothing: released after STOPPED/ARCHIVED, or a terminated session whose cleanup is done.
    SessionFactory(definition=definition, status="STOPPED", worker=busy)
    SessionFactory(definition=definition, status="ARCHIVED", worker=busy)
    SessionFactory(definition=definition, status="TERMINATED", worker=busy, cleanup_pending=False)
    pending_cleanup = SessionFactory(definition=definition, status="TERMINATED", worker=busy, cleanup_pending=True)
    ports_allocate(LabRecordFactory(worker=busy), ["a", "b", "c"])

    # One query for the sessions, one for the re-grades' labs (the grading app's registered capacity holder).
    with django_assert_num_queries(2):
        capacities = worker_capacities()

    cap = capacities[str(busy.pk)]
    assert (cap.cpu_used, cap.memory_used, cap.storage_used) == (12, 24, 60)
    assert cap.nodes_used == 6 * definition.node_count
    assert cap.sessions == 6
    assert cap.ports_used == 3
    assert cap.cpu_free == busy.cpu_cores - 12
    assert cap.ports_free == 8000 - 3
    empty = capacities[str(idle.pk)]
    assert (empty.cpu_used, empty.sessions, empty.ports_used) == (0, 0, 0)

    session_cleanup_finished(pending_cleanup, actor="t")
    assert worker_capacities([busy.pk])[str(busy.pk)].sessions == 5


def _capacity(**overrides):
    base = dict(
        worker_id="w", name="w", status="RUNNING", license_type="ENTERPRISE", cml_version="2.9.0",
        cpu_total=8, memory_total=32, storage_total=100, nodes_total=20, ports_total=100,
    )  # fmt: skip
    return WorkerCapacity(**(base | overrides))


def test_rejection_reasons():
    demand = Demand(cpu_cores=2, memory_gb=4, storage_gb=10, node_count=2, ports=3)
    assert rejection_reason(_capacity(), demand) is None
    assert "cpu" in rejection_reason(_capacity(cpu_used=7), demand)
    assert "memory" in rejection_reason(_capacity(memory_used=30), demand)
    assert "storage" in rejection_reason(_capacity(storage_used=95), demand)
    assert "nodes" in rejection_reason(_capacity(nodes_used=19), demand)
    assert "ports" in rejection_reason(_capacity(ports_used=98), demand)
    assert rejection_reason(_capacity(ports_used=98), demand, reusable_lab=True) is None
    personal = _capacity(license_type="PERSONAL", sessions=1)
    assert "one session" in rejection_reason(personal, Demand(1, 1, 1, 1, 0, ("PERSONAL",)))
    assert "20 nodes" in rejection_reason(_capacity(license_type="PERSONAL", nodes_total=50), Demand(1, 1, 1, 21, 0))


def test_licence_compatibility():
    assert licence_serves("ENTERPRISE", ("PERSONAL",))
    assert licence_serves("ENTERPRISE", ("ENTERPRISE",))
    assert not licence_serves("PERSONAL", ("ENTERPRISE",))
    assert not licence_serves("ENTERPRISE", ("EVALUATION",))
    assert licence_serves("EVALUATION", ("EVALUATION",))
    assert licence_serves("PERSONAL", ())


def test_a_version_with_fewer_parts_names_every_release_it_prefixes():
    assert version_reason("2.9", "2.9.1") == "CML 2.9 is older than 2.9.1"  # it may be 2.9.0
    assert version_reason("2.9", "2.9") is None and version_reason("2.9", "2.9.0") is None
    assert version_reason("2.9", "", "2.9") is None and version_reason("2.9.3", "", "2.9") is None
    assert version_reason("2.9", "", "2.9.0") == "CML 2.9 is newer than 2.9.0"  # it may be 2.9.3
    assert version_reason("2.10.0", "2.9", "2.10") is None  # numerically, 2.10 > 2.9
    assert version_reason("2.10.0", "", "2.9") == "CML 2.10.0 is newer than 2.9"
    assert version_reason("", "2.9") == "CML unknown is older than 2.9" and version_reason("", "", "") is None


def test_the_fit_rule_checks_the_version_before_the_resources():
    capacity = _capacity()
    assert fit_reason(capacity, Demand(1, 1, 1, 1, 1), cml_version_min="2.9.1") == "CML 2.9.0 is older than 2.9.1"
    assert fit_reason(capacity, Demand(99, 1, 1, 1, 1)).startswith("not enough cpu")
