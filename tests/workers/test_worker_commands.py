"""`manage.py worker_list`, `worker_add`, `worker_drain` (SPEC §5.6): output, `--json`, one-line errors and exit 1."""

import json
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from tests.factories import SessionFactory, TemplateFactory, WorkerFactory
from tests.support.commands import manage, run, run_json
from workers.models import CMLWorker, WorkerStatusChange

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent.parent


def fails(*args) -> str:
    with pytest.raises(CommandError) as excinfo:
        run(*args)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# -- worker_list ----------------------------------------------------------------------------


def test_worker_list_shows_status_capacity_in_use_and_licence():
    busy = WorkerFactory(name="busy", cpu_cores=16, license_status="REGISTERED")
    SessionFactory(status="SCHEDULED", worker=busy)
    WorkerFactory(name="idle", status="STOPPED", desired_status="STOPPED")
    WorkerFactory(name="gone", status="TERMINATED")
    out = run("worker_list")
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "STATUS", "DESIRED", "REGION"]
    assert [line.split()[0] for line in lines[1:]] == ["busy", "idle"]  # TERMINATED hidden by default
    assert "2/16" in lines[1] and "REGISTERED" in lines[1]
    assert [line.split()[0] for line in run("worker_list", "--all").splitlines()[1:]] == ["busy", "gone", "idle"]


def test_worker_list_json_and_filters():
    worker = WorkerFactory(name="w1")
    SessionFactory(status="READY", worker=worker)
    WorkerFactory(name="w2", status="STOPPED", region="eu-west-1")
    data = run_json("worker_list", "--status", "running")
    assert [w["name"] for w in data] == ["w1"]
    assert data[0]["usage"]["sessions"] == 1 and data[0]["capacity"]["cpu_cores"] == 16
    assert data[0]["status"] == "RUNNING" and data[0]["id"] == str(worker.pk)
    assert [w["name"] for w in run_json("worker_list", "--region", "eu-west-1")] == ["w2"]
    assert run_json("worker_list", "--status", "draining") == []
    assert "unknown status 'bogus'" in fails("worker_list", "--status", "bogus")
    assert run("worker_list", "--region", "ap-south-1").strip() == "No workers."


# -- worker_add -----------------------------------------------------------------------------


def test_worker_add_from_a_template_creates_a_pending_worker_for_the_loop_to_launch():
    template = TemplateFactory(name="fleet-tpl", cpu_cores=8, memory_gb=32, region="eu-west-1")
    data = run_json("worker_add", "--template", "fleet-tpl", "--name", "w-new")
    worker = CMLWorker.objects.get(name="w-new")
    assert data["id"] == str(worker.pk) and data["status"] == "PENDING" and data["desired_status"] == "RUNNING"
    assert (worker.template, worker.cpu_cores, worker.region) == (template, 8, "eu-west-1")
    change = WorkerStatusChange.objects.get(worker=worker)
    assert change.actor == "command:worker_add" and "fleet-tpl" in change.reason
    out = run("worker_add", "--template", str(template.pk))
    assert "PENDING" in out and CMLWorker.objects.filter(name__startswith="fleet-tpl-").count() == 1


def test_worker_add_registers_an_existing_cml_behind_the_readiness_gate():
    data = run_json(
        "worker_add", "--cml-url", "https://10.0.0.5/", "--name", "lab-box", "--cpu-cores", "32",
        "--license-type", "personal",
    )  # fmt: skip
    worker = CMLWorker.objects.get(name="lab-box")
    assert data["status"] == "STARTING"  # RUNNING once its CML says ready
    assert (worker.cml_base_url, worker.cpu_cores, worker.license_type) == ("https://10.0.0.5", 32, "PERSONAL")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --template"),
        (("--template", "nope"), "no worker template named 'nope'"),
        (("--cml-url", "https://x"), "--name is required"),
        (("--cml-url", "ftp://x", "--name", "x"), "must be an http(s) URL"),
        (("--cml-url", "https://x", "--name", "x", "--license-type", "gold"), "--license-type must be one of"),
        (("--cml-url", "https://x", "--name", "x", "--cpu-cores", "-1"), "must not be negative"),
    ],
)
def test_worker_add_refusals_are_one_line(args, message):
    TemplateFactory(name="fleet-tpl")
    assert message in fails("worker_add", *args)
    assert not CMLWorker.objects.exists()


def test_worker_add_refuses_a_disabled_template_and_a_taken_name():
    TemplateFactory(name="off", enabled=False)
    assert "worker template off is disabled" in fails("worker_add", "--template", "off")
    WorkerFactory(name="taken")
    TemplateFactory(name="on")
    assert "already exists" in fails("worker_add", "--template", "on", "--name", "taken")


# -- worker_drain ---------------------------------------------------------------------------


def test_worker_drain_and_cancel():
    worker = WorkerFactory(name="w1")
    data = run_json("worker_drain", "w1", "--timeout-minutes", "30", "--reason", "patching")
    assert data["status"] == "DRAINING" and data["drain_deadline"]
    worker.refresh_from_db()
    assert worker.status == "DRAINING"
    assert worker.history.last().reason == "patching"
    out = run("worker_drain", str(worker.pk), "--cancel")
    assert "RUNNING: drain cancelled" in out
    worker.refresh_from_db()
    assert (worker.status, worker.drain_deadline) == ("RUNNING", None)
    assert "until empty; deadline" in run("worker_drain", "w1")


def test_worker_drain_refusals_are_one_line():
    WorkerFactory(name="stopped", status="STOPPED")
    WorkerFactory(name="running")
    assert "no worker with id or name 'ghost'" in fails("worker_drain", "ghost")
    assert "cannot go from STOPPED to DRAINING" in fails("worker_drain", "stopped")
    assert "not DRAINING" in fails("worker_drain", "running", "--cancel")
    assert "must not be negative" in fails("worker_drain", "running", "--timeout-minutes", "-5")
    assert CMLWorker.objects.get(name="running").status == "RUNNING"


# -- real manage.py processes: exit 1, one stderr line; --json is only JSON ------------------


@pytest.mark.django_db(transaction=True)
def test_manage_py_worker_commands_exit_1_with_one_line_and_json_is_only_json():
    WorkerFactory(name="w1", status="STOPPED")
    for args, contains in (
        (("worker_drain", "w1"), "cannot go from STOPPED to DRAINING"),
        (("worker_add", "--template", "missing"), "no worker template named 'missing'"),
    ):
        result = manage(*args)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("CommandError: ") and contains in lines[0]
    listed = manage("worker_list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [w["name"] for w in json.loads(listed.stdout)] == ["w1"]
