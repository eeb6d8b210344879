"""The EC2/CloudWatch client over real HTTP against moto in server mode (simulators/moto_server.py).

One moto server per module, reset before each test; faults are injected through its `/_sim/faults`.
Credentials are fake and explicit: nothing here can reach AWS.
"""

import socket
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import boto3
import pytest

from lcm.http import AuthExpired, BadRequest, Conflict, ExternalError, Forbidden, NotFound, Timeout, Unavailable
from simulators.common import ServerThread
from simulators.moto_server import MotoSimulator
from tests.support.simulators import sim_control
from workers.clients.ec2 import TAG_MANAGED_BY, TAG_WORKER_ID, EC2Client, InstanceState, ec2_client, worker_status_for
from workers.clients.ec2_errors import CapacityUnavailable, QuotaExceeded, Throttled
from workers.states import WorkerStatus

FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


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


@pytest.fixture(scope="module")
def module_client(moto_server) -> EC2Client:
    return EC2Client(endpoint_url=moto_server.url, region="us-east-1", max_attempts=3, **FAKE_CREDENTIALS)


@pytest.fixture
def ec2(moto, module_client) -> EC2Client:
    """A client of the freshly reset moto (clients hold no state; building one takes ~0.2 s)."""
    return module_client


@pytest.fixture
def cml_image(ec2):
    return ec2.find_images("cml-2.9*")[0]


def inject(moto, **rule) -> None:
    sim_control.post(f"{moto.url}/_sim/faults", json=rule, timeout=5).raise_for_status()


def calls(moto, operation: str) -> list[dict]:
    recorded = sim_control.get(f"{moto.url}/_sim/requests", timeout=5).json()
    return [entry for entry in recorded if entry["operation"] == operation]


def launch(ec2, image, worker_id="w-1", **kwargs):
    return ec2.run_instance(
        image_id=image.id, instance_type="m5.2xlarge", name=f"cml-{worker_id}", worker_id=worker_id, **kwargs
    )


def raw_client(moto, service: str):
    return boto3.client(service, endpoint_url=moto.url, region_name="us-east-1", **FAKE_CREDENTIALS)


# -- instances -------------------------------------------------------------------------


def test_launch_tags_the_instance_and_describe_finds_it(ec2, cml_image):
    instance = launch(ec2, cml_image, worker_id="w-42", tags={"lcm:role": "cml-worker"})

    assert instance.id.startswith("i-")
    assert instance.state == InstanceState.PENDING
    assert (instance.image_id, instance.instance_type) == (cml_image.id, "m5.2xlarge")
    assert instance.tags == {
        "Name": "cml-w-42",
        TAG_WORKER_ID: "w-42",
        TAG_MANAGED_BY: "lcm",
        "lcm:role": "cml-worker",
    }
    assert (instance.name, instance.worker_id, instance.managed_by) == ("cml-w-42", "w-42", "lcm")

    described = ec2.describe_instance(instance.id)
    assert described.state == InstanceState.RUNNING
    assert described.private_ip
    assert ec2.tags(instance.id)[TAG_WORKER_ID] == "w-42"

    other = launch(ec2, cml_image, worker_id="w-43")
    by_tag = ec2.describe_instances(tags={TAG_WORKER_ID: "w-42"})
    assert [i.id for i in by_tag] == [instance.id]
    assert {i.id for i in ec2.describe_instances(tags={TAG_MANAGED_BY: None})} == {instance.id, other.id}
    assert {i.id for i in ec2.managed_instances()} == {instance.id, other.id}
    assert ec2.describe_instances([]) == []

    health = ec2.instance_status(instance.id)
    assert health.ok and health.state == InstanceState.RUNNING


def test_stop_start_terminate_and_the_guards_moto_lacks(ec2, cml_image):
    instance = launch(ec2, cml_image)

    stopped = ec2.stop(instance.id)
    assert (stopped.previous, stopped.current) == (InstanceState.RUNNING, InstanceState.STOPPING)
    assert ec2.describe_instance(instance.id).state == InstanceState.STOPPED
    assert ec2.describe_instance(instance.id).public_ip is None

    started = ec2.start(instance.id)
    assert (started.previous, started.current) == (InstanceState.STOPPED, InstanceState.PENDING)
    assert ec2.describe_instance(instance.id).state == InstanceState.RUNNING

    terminated = ec2.terminate(instance.id)
    assert (terminated.previous, terminated.current) == (InstanceState.RUNNING, InstanceState.SHUTTING_DOWN)
    assert ec2.describe_instance(instance.id).state == InstanceState.TERMINATED
    assert ec2.managed_instances() == []
    assert [i.id for i in ec2.managed_instances(include_terminated=True)] == [instance.id]

    # moto would restart a terminated instance; real EC2 answers IncorrectInstanceState.
    with pytest.raises(Conflict, match="IncorrectInstanceState"):
        ec2.start(instance.id)
    with pytest.raises(Conflict):
        ec2.stop(instance.id)
    assert ec2.terminate(instance.id).previous == InstanceState.TERMINATED  # idempotent
    assert ec2.describe_instance(instance.id).state == InstanceState.TERMINATED


def test_tags_can_be_set_and_removed(ec2, cml_image):
    instance = launch(ec2, cml_image)
    ec2.set_tags(instance.id, {"lcm:status": "draining"})
    assert ec2.tags(instance.id)["lcm:status"] == "draining"
    ec2.remove_tags(instance.id, ["lcm:status"])
    assert "lcm:status" not in ec2.tags(instance.id)


def test_find_images_by_name_newest_first(moto, ec2):
    raw = raw_client(moto, "ec2")
    older = raw.register_image(Name="cml-2.8.1-lcm", Description="older")["ImageId"]
    newest = raw.register_image(Name="cml-2.10.0-lcm", Description="newest")["ImageId"]
    raw.register_image(Name="ubuntu-22.04", Description="not CML")
    _set_creation_dates(moto, {older: datetime(2024, 1, 1), newest: datetime(2030, 1, 1)})

    images = ec2.find_images("cml-2.*")

    names = [image.name for image in images]
    assert names == ["cml-2.10.0-lcm", "cml-2.9.0-lcm", "cml-2.8.1-lcm"]  # by date, not by name
    assert images[0].id == newest and images[0].creation_date == datetime(2030, 1, 1, tzinfo=UTC)
    assert ec2.find_images("no-such-image*") == []
    assert ec2.image(older).description == "older"


def test_an_unknown_ami_is_refused_before_launch(ec2):
    with pytest.raises(NotFound, match="InvalidAMIID.NotFound"):
        ec2.run_instance(image_id="ami-0123456789abcdef0", instance_type="m5.large", name="x", worker_id="w")
    assert ec2.describe_instances(tags={TAG_MANAGED_BY: None}) == []


# -- errors ----------------------------------------------------------------------------


def test_insufficient_capacity_is_a_typed_error(moto, ec2, cml_image):
    inject(moto, operation="RunInstances", code="InsufficientInstanceCapacity", times=None)

    with pytest.raises(CapacityUnavailable) as excinfo:
        launch(ec2, cml_image)

    error = excinfo.value
    assert isinstance(error, Unavailable)
    assert (error.system, error.operation, error.status) == ("ec2", "RunInstances", 500)
    assert error.detail.startswith("InsufficientInstanceCapacity")
    assert len(calls(moto, "RunInstances")) == 3  # a 5xx: botocore's standard mode tried max_attempts times


def test_instance_limit_is_a_quota_error_without_retries(moto, ec2, cml_image):
    inject(moto, operation="RunInstances", code="InstanceLimitExceeded", times=None)
    with pytest.raises(QuotaExceeded) as excinfo:
        launch(ec2, cml_image)
    assert isinstance(excinfo.value, CapacityUnavailable) and excinfo.value.status == 400
    assert len(calls(moto, "RunInstances")) == 1


def test_request_limit_exceeded_is_retried_then_succeeds(moto, ec2, cml_image):
    inject(moto, operation="RunInstances", code="RequestLimitExceeded", times=1)

    instance = launch(ec2, cml_image)

    assert ec2.describe_instance(instance.id).state == InstanceState.RUNNING
    recorded = calls(moto, "RunInstances")
    assert [entry["fault"] for entry in recorded] == ["RequestLimitExceeded", None]
    assert len(ec2.managed_instances()) == 1  # the retry did not launch a second instance


def test_persistent_throttling_becomes_unavailable(moto):
    client = EC2Client(endpoint_url=moto.url, max_attempts=2, **FAKE_CREDENTIALS)
    inject(moto, operation="DescribeInstances", code="RequestLimitExceeded", times=None)
    with pytest.raises(Throttled) as excinfo:
        client.describe_instances()
    assert isinstance(excinfo.value, Unavailable) and excinfo.value.status == 503
    assert len(calls(moto, "DescribeInstances")) == 2


def test_an_instance_deleted_behind_our_back_is_not_found(moto, ec2, cml_image):
    with pytest.raises(NotFound, match="InvalidInstanceID.NotFound"):
        ec2.describe_instance("i-0123456789abcdef0")
    with pytest.raises(NotFound):
        ec2.stop("i-0123456789abcdef0")

    instance = launch(ec2, cml_image)
    inject(moto, operation="DescribeInstances", code="InvalidInstanceID.NotFound")
    with pytest.raises(NotFound) as excinfo:
        ec2.describe_instance(instance.id)
    assert excinfo.value.status == 400


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("UnauthorizedOperation", Forbidden),
        ("AuthFailure", AuthExpired),
        ("InvalidParameterValue", BadRequest),
        ("IncorrectInstanceState", Conflict),
        ("SomethingNew", ExternalError),
    ],
)
def test_error_codes_map_to_typed_errors(moto, ec2, code, error_type):
    inject(moto, operation="DescribeInstances", code=code, status=418 if code == "SomethingNew" else None)
    with pytest.raises(error_type) as excinfo:
        ec2.describe_instances()
    assert type(excinfo.value) is error_type
    assert excinfo.value.detail.startswith(code)


def test_a_dead_endpoint_is_unavailable_quickly():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = EC2Client(endpoint_url=f"http://127.0.0.1:{port}", connect_timeout=1, read_timeout=1, **FAKE_CREDENTIALS)

    started = time.monotonic()
    with pytest.raises(Unavailable) as excinfo:
        client.describe_instances()

    assert time.monotonic() - started < 5
    assert not isinstance(excinfo.value, Timeout)
    assert excinfo.value.status is None and "cannot connect" in excinfo.value.detail


def test_a_slow_answer_is_a_timeout(moto):
    client = EC2Client(endpoint_url=moto.url, read_timeout=0.3, max_attempts=1, **FAKE_CREDENTIALS)
    inject(moto, operation="DescribeRegions", delay=1.0)
    started = time.monotonic()
    with pytest.raises(Timeout):
        client.ping()
    assert time.monotonic() - started < 0.9


# -- CloudWatch ------------------------------------------------------------------------


def test_cpu_and_memory_metrics_are_read_latest_first(moto, ec2, cml_image):
    instance = launch(ec2, cml_image)
    assert ec2.cpu_utilization(instance.id) is None
    assert ec2.memory_used_percent(instance.id) is None  # no CloudWatch agent: normal

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    cloudwatch = raw_client(moto, "cloudwatch")
    dimensions = [{"Name": "InstanceId", "Value": instance.id}]
    for minutes_ago, value in [(1, 55.0), (4, 12.5), (2, 30.0)]:
        cloudwatch.put_metric_data(
            Namespace="AWS/EC2",
            MetricData=[
                {
                    "MetricName": "CPUUtilization",
                    "Dimensions": dimensions,
                    "Value": value,
                    "Unit": "Percent",
                    "Timestamp": now - timedelta(minutes=minutes_ago),
                }
            ],
        )
    cloudwatch.put_metric_data(
        Namespace="CWAgent",
        MetricData=[{"MetricName": "mem_used_percent", "Dimensions": dimensions, "Value": 61.5, "Timestamp": now}],
    )

    points = ec2.metric_datapoints("AWS/EC2", "CPUUtilization", instance.id, minutes=10)
    assert [p.value for p in points] == [12.5, 30.0, 55.0]
    assert ec2.cpu_utilization(instance.id) == 55.0
    assert ec2.memory_used_percent(instance.id) == 61.5


def test_cloudwatch_errors_are_typed_too(moto, ec2):
    inject(moto, operation="GetMetricStatistics", code="InvalidParameterValue")
    with pytest.raises(BadRequest) as excinfo:
        ec2.cpu_utilization("i-0123456789abcdef0")
    assert excinfo.value.system == "cloudwatch"


# -- helpers and factory ---------------------------------------------------------------


def test_ec2_states_map_to_worker_statuses():
    assert worker_status_for("pending") == WorkerStatus.STARTING
    assert worker_status_for({"Name": "running", "Code": 16}) == WorkerStatus.STARTING  # CML decides RUNNING
    assert InstanceState.STOPPING.worker_status == WorkerStatus.STOPPING
    assert worker_status_for("stopped") == WorkerStatus.STOPPED
    assert worker_status_for("shutting-down") == WorkerStatus.TERMINATING
    assert worker_status_for("terminated") == WorkerStatus.TERMINATED
    assert worker_status_for("rebooting?") is None
    assert InstanceState.parse("bogus") == InstanceState.UNKNOWN
    assert InstanceState.PENDING.transitional and not InstanceState.RUNNING.transitional


def test_factory_reads_the_settings(settings, moto, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    settings.LCM_AWS_ENDPOINT_URL = moto.url
    settings.LCM_AWS_REGION = "us-east-1"
    settings.LCM_HTTP_RETRIES = 1

    client = ec2_client()

    assert client.endpoint_url == moto.url and client.region == "us-east-1"
    assert client.ec2.meta.config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert [image.name for image in client.find_images("cml-*")] == ["cml-2.9.0-lcm"]  # local credentials work
    assert ec2_client() is client  # kept: building a client is slow
    assert ec2_client(region="eu-west-1").region == "eu-west-1"


def _set_creation_dates(moto, dates: dict[str, datetime]) -> None:
    """moto stamps every AMI with the time it was registered; give some a date of our choosing."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[moto.simulator.account_id]["us-east-1"]
    for image_id, date in dates.items():
        backend.amis[image_id].creation_date = date
