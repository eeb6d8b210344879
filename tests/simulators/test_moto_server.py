"""The moto simulator's own layer (faults, slow transitions, reset, AMI seeding), the runner that
starts the simulators together, and `manage.py lcm_simulators`.

Everything goes over real HTTP with boto3 and fake credentials.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from django.core.management import call_command
from django.core.management.base import CommandError

from simulators.common import ServerThread
from simulators.moto_server import MotoSimulator
from simulators.runner import SimulatorStartError, start_simulators
from tests.support.simulators import SIM_TOKEN, sim_control

ROOT = Path(__file__).resolve().parent.parent.parent
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture(scope="module")
def moto_server():
    simulator = MotoSimulator(zero_delay=True)
    server = ServerThread(simulator.app, "127.0.0.1", 0).start()
    yield SimpleNamespace(simulator=simulator, url=server.url)
    server.stop()


@pytest.fixture
def moto(moto_server):
    sim_control.post(f"{moto_server.url}/_sim/reset", timeout=10).raise_for_status()
    return moto_server


def aws(url: str, service: str = "ec2"):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=NO_RETRIES,
    )


def sim(moto, method: str, path: str, **kwargs) -> requests.Response:
    return sim_control.request(method, f"{moto.url}/_sim/{path}", timeout=5, **kwargs)


def cml_image_id(ec2) -> str:
    return ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["cml-2.9.0-lcm"]}])["Images"][0][
        "ImageId"
    ]


def launch(ec2) -> str:
    response = ec2.run_instances(ImageId=cml_image_id(ec2), InstanceType="m5.large", MinCount=1, MaxCount=1)
    return response["Instances"][0]["InstanceId"]


def state(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- AMI seeding and reset -------------------------------------------------------------


def test_the_cml_ami_is_seeded_and_owned_by_the_account(moto):
    images = aws(moto.url).describe_images(Owners=["self"])["Images"]
    assert [(image["Name"], image["State"]) for image in images] == [("cml-2.9.0-lcm", "available")]


@pytest.mark.parametrize("reset_path", ["/_sim/reset", "/moto-api/reset"])
def test_reset_forgets_everything_and_reseeds_the_ami(moto, reset_path):
    ec2 = aws(moto.url)
    before = cml_image_id(ec2)
    launch(ec2)
    sim(moto, "POST", "faults", json={"operation": "DescribeRegions", "code": "InternalError", "times": None})
    sim(moto, "POST", "timings", json={"boot": 100})

    response = requests.post(f"{moto.url}{reset_path}", timeout=10)

    assert response.status_code == 200
    assert ec2.describe_instances()["Reservations"] == []
    assert sim(moto, "GET", "faults").json() == []
    assert sim(moto, "GET", "state").json()["timings"]["boot"] == 0.0
    assert cml_image_id(ec2) != before  # a fresh seed, not a leftover
    ec2.describe_regions()


# -- faults ----------------------------------------------------------------------------


def test_an_injected_ec2_error_is_ec2_xml_that_botocore_parses(moto):
    ec2 = aws(moto.url)
    added = sim(moto, "POST", "faults", json={"operation": "RunInstances", "code": "InsufficientInstanceCapacity"})
    assert added.status_code == 201 and added.json()[0]["extra"] == {"code": "InsufficientInstanceCapacity"}

    with pytest.raises(ClientError) as excinfo:
        launch(ec2)
    error = excinfo.value.response
    assert error["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 500

    launch(ec2)  # `times` defaults to 1
    assert sim(moto, "GET", "faults").json() == []
    recorded = [(r["operation"], r["status"], r["fault"]) for r in sim(moto, "GET", "requests").json()]
    assert ("RunInstances", 500, "InsufficientInstanceCapacity") in recorded
    assert ("RunInstances", 200, None) in recorded


def test_faults_match_their_operation_only_and_count_down(moto):
    ec2 = aws(moto.url)
    rule = {"operation": "DescribeInstances", "code": "RequestLimitExceeded", "times": 2, "message": "slow down"}
    sim(moto, "POST", "faults", json=[rule])

    ec2.describe_images(Owners=["self"])  # another operation is untouched
    for _ in range(2):
        with pytest.raises(ClientError) as excinfo:
            ec2.describe_instances()
        assert excinfo.value.response["Error"] == {"Code": "RequestLimitExceeded", "Message": "slow down"}
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    ec2.describe_instances()


def test_an_explicit_status_and_a_standing_rule(moto):
    ec2 = aws(moto.url)
    sim(moto, "POST", "faults", json={"operation": "DescribeRegions", "code": "UnauthorizedOperation", "times": None})
    for _ in range(3):
        with pytest.raises(ClientError) as excinfo:
            ec2.describe_regions()
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    assert sim(moto, "DELETE", "faults").json() == {"cleared": True}
    ec2.describe_regions()


def test_cloudwatch_faults_answer_in_its_protocol(moto):
    cloudwatch = aws(moto.url, "cloudwatch")
    sim(moto, "POST", "faults", json={"operation": "ListMetrics", "code": "InternalServiceFault", "status": 500})
    with pytest.raises(ClientError) as excinfo:
        cloudwatch.list_metrics()
    assert excinfo.value.response["Error"]["Code"] == "InternalServiceFault"
    assert cloudwatch.list_metrics()["Metrics"] == []


def test_bad_fault_rules_are_refused(moto):
    assert sim(moto, "POST", "faults", json={"operation": "RunInstances", "status": 99}).status_code == 400
    assert sim(moto, "POST", "faults", json="nonsense").status_code == 400
    assert sim(moto, "GET", "faults").json() == []


# -- slow transitions ------------------------------------------------------------------


def test_slow_boot_stop_and_terminate_follow_the_clock(moto):
    ec2 = aws(moto.url)
    sim(moto, "POST", "timings", json={"boot": 30, "stop": 20, "terminate": 10})
    instance_id = launch(ec2)

    assert state(ec2, instance_id) == "pending"
    pending = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending"]}])
    assert [i["InstanceId"] for r in pending["Reservations"] for i in r["Instances"]] == [instance_id]
    status = ec2.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)["InstanceStatuses"][0]
    assert status["InstanceState"]["Name"] == "pending"
    assert status["InstanceStatus"]["Status"] == "not-applicable"
    transitions = sim(moto, "GET", "state").json()["transitions"]
    assert [(t["instance_id"], t["state"], t["final"]) for t in transitions] == [(instance_id, "pending", "running")]

    sim(moto, "POST", "clock", json={"advance": 29})
    assert state(ec2, instance_id) == "pending"
    sim(moto, "POST", "clock", json={"advance": 2})
    assert state(ec2, instance_id) == "running"

    ec2.stop_instances(InstanceIds=[instance_id])
    assert state(ec2, instance_id) == "stopping"
    sim(moto, "POST", "clock", json={"advance": 21})
    assert state(ec2, instance_id) == "stopped"

    ec2.terminate_instances(InstanceIds=[instance_id])
    assert state(ec2, instance_id) == "shutting-down"
    sim(moto, "POST", "clock", json={"advance": 11})
    assert state(ec2, instance_id) == "terminated"
    assert sim(moto, "GET", "state").json()["transitions"] == []


def test_zero_delay_keeps_motos_instant_transitions(moto):
    ec2 = aws(moto.url)
    instance_id = launch(ec2)
    assert state(ec2, instance_id) == "running"
    ec2.stop_instances(InstanceIds=[instance_id])
    assert state(ec2, instance_id) == "stopped"


def test_an_instance_can_be_pinned_in_pending_forever(moto):
    ec2 = aws(moto.url)
    instance_id = launch(ec2)

    pinned = sim(moto, "POST", f"instances/{instance_id}/state", json={"state": "pending", "seconds": None})
    assert pinned.status_code == 200
    sim(moto, "POST", "clock", json={"advance": 86_400})
    assert state(ec2, instance_id) == "pending"

    ec2.terminate_instances(InstanceIds=[instance_id])  # an EC2 call still moves it
    assert state(ec2, instance_id) == "terminated"


def test_pinning_refuses_unknown_instances_and_states(moto):
    instance_id = launch(aws(moto.url))
    assert sim(moto, "POST", "instances/i-0123456789abcdef0/state", json={"state": "pending"}).status_code == 404
    assert sim(moto, "POST", f"instances/{instance_id}/state", json={"state": "rebooting"}).status_code == 400
    assert sim(moto, "POST", "timings", json={"boot": "soon"}).status_code == 400


# -- the runner ------------------------------------------------------------------------


def test_runner_starts_moto_in_process_and_stops_it(moto_server):
    handle = start_simulators("127.0.0.1", control_token=SIM_TOKEN, moto_port=0, zero_delay=True, only=["moto"])
    try:
        assert list(handle.urls) == ["moto"]
        url = handle.urls["moto"]
        assert sim_control.get(f"{url}/_sim/health", timeout=5).json() == {"simulator": "moto", "ok": True}
        assert cml_image_id(aws(url))
    finally:
        handle.stop()
    with pytest.raises(requests.ConnectionError):
        sim_control.get(f"{url}/_sim/health", timeout=2)
    handle.stop()  # twice is harmless


def test_runner_reports_a_port_in_use_and_leaves_nothing_running():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SimulatorStartError, match=f"cannot listen on 127.0.0.1:{port} for the moto simulator"):
            start_simulators("127.0.0.1", control_token=SIM_TOKEN, moto_port=port, zero_delay=True, only=["moto"])


def test_runner_refuses_unknown_and_unimportable_simulators(monkeypatch):
    with pytest.raises(SimulatorStartError, match="unknown simulator 'ftp'"):
        start_simulators(control_token=SIM_TOKEN, only=["ftp"])
    monkeypatch.setitem(sys.modules, "simulators.cml.app", None)  # import fails like a missing module
    with pytest.raises(SimulatorStartError, match="the cml simulator is not available"):
        start_simulators(control_token=SIM_TOKEN, cml_port=0, only=["cml"])


def test_runner_starts_the_simulators_in_a_child_process():
    handle = start_simulators(
        "127.0.0.1", control_token=SIM_TOKEN, moto_port=0, zero_delay=True, only=["moto"], in_process=False
    )
    try:
        url = handle.urls["moto"]
        assert sim_control.get(f"{url}/_sim/health", timeout=5).ok
        assert cml_image_id(aws(url))
    finally:
        handle.stop()
    assert handle.process is None


def test_runner_child_process_errors_are_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SimulatorStartError, match=f"error: cannot listen on 127.0.0.1:{port}"):
            start_simulators("127.0.0.1", control_token=SIM_TOKEN, moto_port=port, only=["moto"], in_process=False)


def test_all_five_simulators_start_together():
    handle = start_simulators(
        "127.0.0.1",
        cml_port=0,
        lds_port=0,
        grading_port=0,
        moto_port=0,
        oidc_port=0,
        zero_delay=True,
        webhook_url=None,
        control_token=SIM_TOKEN,
    )
    try:
        assert set(handle.urls) == {"cml", "lds", "grading", "moto", "oidc"}
        for name, url in handle.urls.items():
            health = sim_control.get(f"{url}/_sim/health", timeout=5).json()
            assert health["ok"] is True, name
    finally:
        handle.stop()


# -- manage.py lcm_simulators ----------------------------------------------------------


def test_command_port_in_use_is_one_line_error(settings):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings.LCM_SIM_MOTO_PORT = busy.getsockname()[1]
        out = StringIO()
        with pytest.raises(CommandError) as excinfo:
            call_command("lcm_simulators", "--only", "moto", stdout=out, stderr=StringIO())
    message = str(excinfo.value)
    assert "cannot listen on" in message and "\n" not in message
    assert out.getvalue() == ""


def manage(*args, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "lcm_simulators", *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "lcm.settings", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_manage_py_port_in_use_exits_1_with_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        process = manage("--only", "moto", env={"LCM_SIM_MOTO_PORT": str(busy.getsockname()[1])})
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("CommandError: cannot listen on 127.0.0.1:")


def test_manage_py_runs_until_sigterm():
    process = manage("--only", "moto", "--zero-delay", "--json", env={"LCM_SIM_MOTO_PORT": "0"})
    try:
        line = process.stdout.readline()
        url = json.loads(line)["urls"]["moto"]
        assert sim_control.get(f"{url}/_sim/health", timeout=5).ok
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0


def test_s3_operations_are_named_for_faults_and_answer_s3_errors(moto):
    """Evidence (SPEC §9) lives in moto's S3: its path-style calls are named (`PutObject`, `GetObject`, ...) so a
    fault rule can fail them, answered as S3 errors that botocore parses."""
    s3 = boto3.client(
        "s3",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket="evidence")
    sim(moto, "POST", "faults", json={"operation": "PutObject", "code": "InternalError", "times": 1})
    with pytest.raises(ClientError) as failed:
        s3.put_object(Bucket="evidence", Key="sessions/a/lab_yaml/lab.yaml", Body=b"nodes: []")
    assert failed.value.response["Error"]["Code"] == "InternalError"
    s3.put_object(Bucket="evidence", Key="sessions/a/lab_yaml/lab.yaml", Body=b"nodes: []")
    sim(moto, "POST", "faults", json={"operation": "GetObject", "code": "SlowDown", "status": 503, "times": 1})
    with pytest.raises(ClientError):
        s3.get_object(Bucket="evidence", Key="sessions/a/lab_yaml/lab.yaml")
    assert s3.get_object(Bucket="evidence", Key="sessions/a/lab_yaml/lab.yaml")["Body"].read() == b"nodes: []"
    listed = s3.list_objects_v2(Bucket="evidence", Prefix="sessions/")
    assert [item["Key"] for item in listed["Contents"]] == ["sessions/a/lab_yaml/lab.yaml"]
    operations = [r["operation"] for r in sim(moto, "GET", "requests").json()]
    assert {"CreateBucket", "PutObject", "GetObject", "ListObjectsV2"} <= set(operations)
