"""The services appended to `workers.services` for the REST API: checked desired state and licence intents."""

import pytest

from lcm.fsm import InvalidTransition
from tests.factories import WorkerFactory
from workers.models import WorkerStatusChange
from workers.services import worker_license_request, worker_request_desired

pytestmark = pytest.mark.django_db


def test_request_desired_records_like_set_desired():
    worker = WorkerFactory()
    worker = worker_request_desired(worker, "stopped", actor="tester", reason="night")
    assert worker.desired_status == "STOPPED"
    change = WorkerStatusChange.objects.get(worker=worker)
    assert (change.field, change.from_status, change.to_status, change.actor) == (
        "desired_status",
        "RUNNING",
        "STOPPED",
        "tester",
    )


@pytest.mark.parametrize(
    ("status", "desired"), [("TERMINATED", "TERMINATED"), ("TERMINATING", "RUNNING"), ("RUNNING", "TERMINATED")]
)
def test_request_desired_refuses_a_worker_that_is_going(status, desired):
    worker = WorkerFactory(status=status, desired_status=desired)
    for target in ("RUNNING", "STOPPED"):
        with pytest.raises(InvalidTransition) as excinfo:
            worker_request_desired(worker, target, actor="tester")
        assert excinfo.value.current == status
    assert worker_request_desired(worker, "TERMINATED", actor="tester").desired_status == "TERMINATED"


def test_license_request_moves_and_records():
    worker = WorkerFactory(license_error="old failure")
    worker = worker_license_request(worker, "registering", actor="tester")
    assert (worker.license_status, worker.license_error) == ("REGISTERING", "")
    change = WorkerStatusChange.objects.get(worker=worker)
    assert (change.field, change.from_status, change.to_status) == ("license_status", "UNREGISTERED", "REGISTERING")


@pytest.mark.parametrize(
    ("licence", "target", "allowed"),
    [
        ("REGISTERING", "REGISTERING", []),
        ("REGISTERED", "REGISTERING", ["DEREGISTERING"]),
        ("UNREGISTERED", "DEREGISTERING", ["REGISTERING"]),
    ],
)
def test_license_request_refusals(licence, target, allowed):
    worker = WorkerFactory(license_status=licence)
    with pytest.raises(InvalidTransition) as excinfo:
        worker_license_request(worker, target, actor="tester")
    assert (excinfo.value.current, excinfo.value.allowed) == (licence, allowed)
    assert not WorkerStatusChange.objects.exists()


def test_license_request_refused_on_a_terminated_worker_and_bad_target():
    from django.core.exceptions import ValidationError

    worker = WorkerFactory(status="TERMINATED", license_status="REGISTERED")
    with pytest.raises(InvalidTransition):
        worker_license_request(worker, "DEREGISTERING", actor="tester")
    with pytest.raises(ValidationError):
        worker_license_request(worker, "REGISTERED", actor="tester")
