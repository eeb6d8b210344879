"""Workers and lab records: FSM tables (sampled moves), desired status, history rows, port release."""

import pytest

from lcm.fsm import InvalidTransition
from tests.factories import LabRecordFactory, TemplateFactory, WorkerFactory
from workers.models import CMLWorker, Port, WorkerStatusChange
from workers.port_services import ports_allocate
from workers.services import lab_record_transition, worker_create, worker_set_desired, worker_transition
from workers.states import WORKER_TRANSITIONS

pytestmark = pytest.mark.django_db

SPEC_WORKER_TABLE = {
    "PENDING": {"PROVISIONING", "FAILED", "TERMINATED"},
    "PROVISIONING": {"STARTING", "RUNNING", "FAILED", "TERMINATING"},
    "STARTING": {"RUNNING", "STOPPING", "FAILED"},
    "RUNNING": {"DRAINING", "STOPPING", "TERMINATING", "FAILED"},
    "DRAINING": {"RUNNING", "STOPPING", "TERMINATING"},
    "STOPPING": {"STOPPED", "FAILED"},
    "STOPPED": {"STARTING", "TERMINATING"},
    "TERMINATING": {"TERMINATED"},
    "TERMINATED": set(),
    "FAILED": {"PENDING", "TERMINATING"},
}


def test_worker_table_is_the_spec_table():
    assert {k: set(v) for k, v in WORKER_TRANSITIONS.items()} == SPEC_WORKER_TABLE
    declared = {(t.source, t.target) for t in CMLWorker._meta.get_field("status").get_all_transitions(CMLWorker)}
    assert declared == {(s, t) for s, targets in SPEC_WORKER_TABLE.items() for t in targets}


@pytest.mark.parametrize(
    ("source", "target", "ok"),
    [
        ("PENDING", "PROVISIONING", True),
        ("PROVISIONING", "RUNNING", True),
        ("RUNNING", "DRAINING", True),
        ("DRAINING", "RUNNING", True),
        ("STOPPED", "STARTING", True),
        ("FAILED", "PENDING", True),
        ("TERMINATING", "TERMINATED", True),
        ("PENDING", "RUNNING", False),
        ("STOPPED", "RUNNING", False),
        ("TERMINATED", "PENDING", False),
        ("DRAINING", "FAILED", False),
    ],
)
def test_worker_transitions_sampled(source, target, ok):
    worker = WorkerFactory(status=source)
    if ok:
        worker_transition(worker, target, actor="worker-reconciler", reason="test")
        worker.refresh_from_db()
        assert worker.status == target
        row = WorkerStatusChange.objects.get(worker=worker)
        assert (row.field, row.from_status, row.to_status, row.actor) == ("status", source, target, "worker-reconciler")
    else:
        with pytest.raises(InvalidTransition):
            worker_transition(worker, target, actor="t")
        worker.refresh_from_db()
        assert worker.status == source
        assert not WorkerStatusChange.objects.filter(worker=worker).exists()


def test_create_from_template_copies_capacity():
    template = TemplateFactory(cpu_cores=32, memory_gb=128, storage_gb=500, max_nodes=80)
    worker = worker_create(name="w-1", template=template, actor="admin")
    assert (worker.cpu_cores, worker.memory_gb, worker.max_nodes, worker.status) == (32, 128, 80, "PENDING")
    assert WorkerStatusChange.objects.get(worker=worker).to_status == "PENDING"


def test_create_rejects_duplicates_and_bad_capacity():
    worker_create(name="w-1", actor="admin")
    with pytest.raises(Exception, match="already exists"):
        worker_create(name="w-1", actor="admin")
    with pytest.raises(Exception, match="non-negative"):
        worker_create(name="w-2", actor="admin", cpu_cores=-1)


def test_desired_status_is_recorded_once():
    worker = WorkerFactory()
    worker_set_desired(worker, "stopped", actor="admin", reason="night")
    worker_set_desired(worker, "STOPPED", actor="admin")
    worker.refresh_from_db()
    assert worker.desired_status == "STOPPED"
    rows = WorkerStatusChange.objects.filter(worker=worker, field="desired_status")
    assert [(r.from_status, r.to_status) for r in rows] == [("RUNNING", "STOPPED")]


def test_deleting_a_lab_releases_its_ports():
    lab = LabRecordFactory(status="DELETING")
    ports_allocate(lab, ["a", "b"])
    lab_record_transition(lab, "DELETED", actor="t")
    assert not Port.objects.filter(lab_record=lab).exists()
    with pytest.raises(InvalidTransition):
        lab_record_transition(lab, "STARTING", actor="t")


def test_drain_sets_a_deadline_and_cancel_only_undoes_a_drain():
    from workers.services import worker_cancel_drain, worker_drain

    worker = WorkerFactory()
    drained = worker_drain(worker, actor="admin", timeout_minutes=30)
    assert drained.status == "DRAINING"
    assert (drained.drain_deadline - drained.drain_started_at).total_seconds() == 1800
    back = worker_cancel_drain(worker, actor="admin")
    assert back.status == "RUNNING" and back.drain_deadline is None
    with pytest.raises(InvalidTransition, match="not DRAINING"):
        worker_cancel_drain(WorkerFactory(status="PROVISIONING"), actor="admin")


def test_negative_template_cost_is_refused(tmp_path):
    from django.core.exceptions import ValidationError

    from workers.template_services import templates_seed

    path = tmp_path / "t.yaml"
    path.write_text(
        "templates:\n  - {name: x, instance_type: m5, ami_name_pattern: a, cpu_cores: 1, memory_gb: 1,"
        " storage_gb: 1, max_nodes: 1, cost_per_hour: -5}\n"
    )
    with pytest.raises(ValidationError) as excinfo:
        templates_seed(path)
    assert "templates[0].cost_per_hour" in excinfo.value.message_dict
