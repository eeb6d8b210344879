"""EC2 and CloudWatch for CML workers (EXTERNAL-SYSTEMS §2), behind typed errors.

What it guarantees:
- one endpoint setting for both services (`LCM_AWS_ENDPOINT_URL`, empty = real AWS; moto in tests
  and in the embedded default), explicit connect/read timeouts and bounded retries in botocore's
  "standard" mode (throttling, 5xx, connection errors and, unlike `lcm.http`, read timeouts, with
  exponential backoff and jitter), so a call can take up to `max_attempts` x its timeouts;
- the errors of `lcm.http` instead of raw botocore exceptions: `CapacityUnavailable` /
  `QuotaExceeded` / `Throttled` (all `Unavailable`), `Timeout`, `NotFound`, `Conflict`,
  `BadRequest`, `Forbidden`, `AuthExpired`, `ExternalError`;
- the guards moto does not apply (EXTERNAL-SYSTEMS §2.3): no start of a terminated instance, no
  launch from an AMI that does not exist, no "describe everything" when given no instance ids;
- launches are idempotent across botocore's own retries (a `ClientToken` per call).

The botocore-to-typed-error mapping (and EC2's own error classes) lives in
`workers.clients.ec2_errors`. Every method names the AWS operation it calls; the operation names
are also what the moto simulator's fault layer matches (`simulators/moto_server.py`).
"""

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import boto3
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings

from lcm import metrics
from lcm.http import Conflict, ExternalError, NotFound, call_outcome
from workers.clients.ec2_errors import typed_error
from workers.states import WorkerStatus

logger = logging.getLogger("lcm.workers.ec2")

TAG_NAME = "Name"
TAG_WORKER_ID = "lcm:worker_id"
TAG_MANAGED_BY = "lcm:managed_by"
DEFAULT_MANAGED_BY = "lcm"

# Used only when an endpoint (moto) is configured and no credentials are: moto accepts any key,
# and skipping the credential chain avoids its slow instance-metadata probe off EC2.
LOCAL_ENDPOINT_CREDENTIALS = {"aws_access_key_id": "lcm-local", "aws_secret_access_key": "lcm-local"}


class InstanceState(StrEnum):
    """An EC2 instance state name (`State.Name`)."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value) -> "InstanceState":
        """From a state name or an API `State` / `InstanceState` dict; anything else is UNKNOWN."""
        if isinstance(value, dict):
            value = value.get("Name")
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN

    @property
    def transitional(self) -> bool:
        return self in _TRANSITIONAL

    @property
    def worker_status(self) -> WorkerStatus | None:
        """The worker status this EC2 state implies (see `worker_status_for`)."""
        return worker_status_for(self)


_TRANSITIONAL = {InstanceState.PENDING, InstanceState.STOPPING, InstanceState.SHUTTING_DOWN}

# A `running` instance only makes a worker STARTING: RUNNING also needs CML's
# `system_information.ready` (SPEC §3.6). `pending` is STARTING too, so that both a first launch
# (PROVISIONING → STARTING) and a restart (STOPPED → STARTING) are legal FSM moves.
_WORKER_STATUS = {
    InstanceState.PENDING: WorkerStatus.STARTING,
    InstanceState.RUNNING: WorkerStatus.STARTING,
    InstanceState.STOPPING: WorkerStatus.STOPPING,
    InstanceState.STOPPED: WorkerStatus.STOPPED,
    InstanceState.SHUTTING_DOWN: WorkerStatus.TERMINATING,
    InstanceState.TERMINATED: WorkerStatus.TERMINATED,
}


def worker_status_for(state: InstanceState | str | dict) -> WorkerStatus | None:
    """The worker status an EC2 instance state implies; None for an unknown state."""
    return _WORKER_STATUS.get(InstanceState.parse(state))


@dataclass(frozen=True)
class Instance:
    """One EC2 instance as `describe_instances` / `run_instances` report it."""

    id: str
    state: InstanceState
    instance_type: str = ""
    image_id: str = ""
    launch_time: datetime | None = None
    private_ip: str | None = None
    public_ip: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    state_reason: str = ""

    @property
    def name(self) -> str:
        return self.tags.get(TAG_NAME, "")

    @property
    def worker_id(self) -> str | None:
        return self.tags.get(TAG_WORKER_ID)

    @property
    def managed_by(self) -> str | None:
        return self.tags.get(TAG_MANAGED_BY)

    @classmethod
    def from_api(cls, data: dict) -> "Instance":
        reason = data.get("StateReason") or {}
        return cls(
            id=data["InstanceId"],
            state=InstanceState.parse(data.get("State")),
            instance_type=data.get("InstanceType", ""),
            image_id=data.get("ImageId", ""),
            launch_time=data.get("LaunchTime"),
            private_ip=data.get("PrivateIpAddress") or None,
            public_ip=data.get("PublicIpAddress") or None,
            tags=_tag_dict(data.get("Tags")),
            state_reason=reason.get("Message") or reason.get("Code") or "",
        )


@dataclass(frozen=True)
class StateChange:
    """The answer of start/stop/terminate: the state before the call and the state it moved to."""

    instance_id: str
    previous: InstanceState
    current: InstanceState


@dataclass(frozen=True)
class InstanceHealth:
    """`describe_instance_status`: the state plus the instance and system reachability checks."""

    instance_id: str
    state: InstanceState
    instance_status: str  # ok | impaired | insufficient-data | initializing | not-applicable
    system_status: str

    @property
    def ok(self) -> bool:
        return self.state == InstanceState.RUNNING and self.instance_status == "ok" and self.system_status == "ok"


@dataclass(frozen=True)
class Image:
    """An AMI as `describe_images` reports it."""

    id: str
    name: str
    description: str = ""
    creation_date: datetime | None = None
    state: str = ""
    architecture: str = ""

    @classmethod
    def from_api(cls, data: dict) -> "Image":
        return cls(
            id=data["ImageId"],
            name=data.get("Name", ""),
            description=data.get("Description", ""),
            creation_date=_parse_time(data.get("CreationDate")),
            state=data.get("State", ""),
            architecture=data.get("Architecture", ""),
        )


@dataclass(frozen=True)
class Datapoint:
    """One CloudWatch statistic value."""

    timestamp: datetime
    value: float
    unit: str = ""


class EC2Client:
    """EC2 and CloudWatch in one region, through one (optional) endpoint URL."""

    system = "ec2"

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_attempts: int = 4,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        managed_by: str = DEFAULT_MANAGED_BY,
        image_owners: Iterable[str] = ("self",),
    ):
        self.region = region
        self.endpoint_url = endpoint_url or None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.managed_by = managed_by
        self.image_owners = list(image_owners)
        credentials = {
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        if self.endpoint_url and not aws_access_key_id and not os.environ.get("AWS_ACCESS_KEY_ID"):
            credentials.update(LOCAL_ENDPOINT_CREDENTIALS)
        # A session per client: boto3's default session is not thread-safe to create clients from.
        session = boto3.session.Session(region_name=region, **credentials)
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": max(1, max_attempts)},
            user_agent_extra="lcm",
        )
        self.ec2 = session.client("ec2", endpoint_url=self.endpoint_url, config=config)
        self.cloudwatch = session.client("cloudwatch", endpoint_url=self.endpoint_url, config=config)

    # -- instances -----------------------------------------------------------------------

    def run_instance(
        self,
        *,
        image_id: str,
        instance_type: str,
        name: str,
        worker_id: str,
        tags: dict[str, str] | None = None,
        subnet_id: str | None = None,
        security_group_ids: list[str] | None = None,
        key_name: str | None = None,
        user_data: str | None = None,
        monitoring: bool = False,
        client_token: str | None = None,
        validate_image: bool = True,
    ) -> Instance:
        """`RunInstances` one instance tagged `Name`, `lcm:worker_id` and `lcm:managed_by` (+ `tags`).

        The AMI is checked first (`DescribeImages`) because moto launches from any id. Pass the
        same `client_token` to make a repeated launch return the first one's instance.
        """
        if validate_image:
            self.image(image_id)
        all_tags = dict(tags or {}) | {TAG_NAME: name, TAG_WORKER_ID: str(worker_id), TAG_MANAGED_BY: self.managed_by}
        params: dict = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token or uuid.uuid4().hex,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}
            ],
        }
        if subnet_id:
            params["SubnetId"] = subnet_id
        if security_group_ids:
            params["SecurityGroupIds"] = list(security_group_ids)
        if key_name:
            params["KeyName"] = key_name
        if user_data:
            params["UserData"] = user_data
        if monitoring:
            params["Monitoring"] = {"Enabled": True}
        response = self._call(self.ec2, "RunInstances", **params)
        return Instance.from_api(response["Instances"][0])

    def start(self, instance_id: str) -> StateChange:
        """`StartInstances`; refused (Conflict) unless the instance is stopped, pending or running."""
        current = self.describe_instance(instance_id)
        if current.state in (InstanceState.STOPPING, InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED):
            raise self._incorrect_state("StartInstances", current, "started")
        response = self._call(self.ec2, "StartInstances", InstanceIds=[instance_id])
        return _state_change(response["StartingInstances"], instance_id)

    def stop(self, instance_id: str, *, force: bool = False) -> StateChange:
        """`StopInstances`; refused (Conflict) for a pending, shutting-down or terminated instance."""
        current = self.describe_instance(instance_id)
        if current.state in (InstanceState.PENDING, InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED):
            raise self._incorrect_state("StopInstances", current, "stopped")
        response = self._call(self.ec2, "StopInstances", InstanceIds=[instance_id], Force=force)
        return _state_change(response["StoppingInstances"], instance_id)

    def terminate(self, instance_id: str) -> StateChange:
        """`TerminateInstances` (idempotent: terminating a terminated instance is no error)."""
        response = self._call(self.ec2, "TerminateInstances", InstanceIds=[instance_id])
        return _state_change(response["TerminatingInstances"], instance_id)

    def describe_instances(
        self,
        instance_ids: Iterable[str] | None = None,
        *,
        tags: dict[str, str | None] | None = None,
        states: Iterable[InstanceState | str] | None = None,
    ) -> list[Instance]:
        """`DescribeInstances` by ids and/or filters (`tags` value None = the tag key exists), all pages.

        `instance_ids=[]` describes nothing (EC2 would describe every instance of the account).
        """
        params: dict = {}
        if instance_ids is not None:
            ids = list(instance_ids)
            if not ids:
                return []
            params["InstanceIds"] = ids
        filters = [
            {"Name": "tag-key", "Values": [key]} if value is None else {"Name": f"tag:{key}", "Values": [value]}
            for key, value in (tags or {}).items()
        ]
        if states is not None:
            filters.append({"Name": "instance-state-name", "Values": [str(s) for s in states]})
        if filters:
            params["Filters"] = filters
        instances = []
        for page in self._pages(self.ec2, "DescribeInstances", **params):
            for reservation in page.get("Reservations", []):
                instances.extend(Instance.from_api(item) for item in reservation.get("Instances", []))
        return instances

    def describe_instance(self, instance_id: str) -> Instance:
        """`DescribeInstances` for one id; NotFound when EC2 does not know it (any more)."""
        found = self.describe_instances([instance_id])
        if not found:
            raise NotFound(self.system, "DescribeInstances", f"InvalidInstanceID.NotFound: {instance_id}")
        return found[0]

    def managed_instances(self, *, include_terminated: bool = False) -> list[Instance]:
        """`DescribeInstances` filtered on `lcm:managed_by` = this client's `managed_by` (worker discovery)."""
        states = None if include_terminated else [s for s in InstanceState if s not in _GONE]
        return self.describe_instances(tags={TAG_MANAGED_BY: self.managed_by}, states=states)

    def instance_status(self, instance_id: str) -> InstanceHealth:
        """`DescribeInstanceStatus` (IncludeAllInstances) for one instance."""
        response = self._call(self.ec2, "DescribeInstanceStatus", InstanceIds=[instance_id], IncludeAllInstances=True)
        for item in response.get("InstanceStatuses", []):
            if item.get("InstanceId") == instance_id:
                return InstanceHealth(
                    instance_id=instance_id,
                    state=InstanceState.parse(item.get("InstanceState")),
                    instance_status=(item.get("InstanceStatus") or {}).get("Status", ""),
                    system_status=(item.get("SystemStatus") or {}).get("Status", ""),
                )
        raise NotFound(self.system, "DescribeInstanceStatus", f"InvalidInstanceID.NotFound: {instance_id}")

    # -- images --------------------------------------------------------------------------

    def find_images(self, name_pattern: str, *, owners: Iterable[str] | None = None) -> list[Image]:
        """`DescribeImages` of available AMIs whose name matches `name_pattern` (`*`/`?` wildcards), newest first."""
        owners = list(owners) if owners is not None else self.image_owners
        params: dict = {
            "Filters": [{"Name": "name", "Values": [name_pattern]}, {"Name": "state", "Values": ["available"]}]
        }
        if owners:
            params["Owners"] = owners
        response = self._call(self.ec2, "DescribeImages", **params)
        images = [Image.from_api(item) for item in response.get("Images", [])]
        oldest = datetime.min.replace(tzinfo=UTC)
        return sorted(images, key=lambda image: (image.creation_date or oldest, image.name), reverse=True)

    def image(self, image_id: str) -> Image:
        """`DescribeImages` for one AMI id; NotFound when it does not exist."""
        response = self._call(self.ec2, "DescribeImages", ImageIds=[image_id])
        for item in response.get("Images", []):
            if item.get("ImageId") == image_id:
                return Image.from_api(item)
        raise NotFound(self.system, "DescribeImages", f"InvalidAMIID.NotFound: {image_id}")

    # -- tags ----------------------------------------------------------------------------

    def tags(self, instance_id: str) -> dict[str, str]:
        """`DescribeTags` of one instance, as a dict."""
        filters = [
            {"Name": "resource-id", "Values": [instance_id]},
            {"Name": "resource-type", "Values": ["instance"]},
        ]
        tags: dict[str, str] = {}
        for page in self._pages(self.ec2, "DescribeTags", Filters=filters):
            tags.update(_tag_dict(page.get("Tags")))
        return tags

    def set_tags(self, instance_id: str, tags: dict[str, str]) -> None:
        """`CreateTags` (adds or overwrites)."""
        if tags:
            self._call(
                self.ec2,
                "CreateTags",
                Resources=[instance_id],
                Tags=[{"Key": k, "Value": str(v)} for k, v in tags.items()],
            )

    def remove_tags(self, instance_id: str, keys: Iterable[str]) -> None:
        """`DeleteTags` by key."""
        keys = list(keys)
        if keys:
            self._call(self.ec2, "DeleteTags", Resources=[instance_id], Tags=[{"Key": k} for k in keys])

    def ping(self) -> None:
        """`DescribeRegions`: a cheap check of the endpoint and the credentials."""
        self._call(self.ec2, "DescribeRegions")

    # -- CloudWatch ----------------------------------------------------------------------

    def metric_datapoints(
        self,
        namespace: str,
        metric_name: str,
        instance_id: str,
        *,
        minutes: int = 10,
        period: int = 60,
        statistic: str = "Average",
    ) -> list[Datapoint]:
        """`GetMetricStatistics` for one instance over the last `minutes`, oldest first.

        CloudWatch returns datapoints unordered; `period` must be a multiple of 60.
        """
        end = datetime.now(UTC)
        response = self._call(
            self.cloudwatch,
            "GetMetricStatistics",
            system="cloudwatch",
            Namespace=namespace,
            MetricName=metric_name,
            Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
            StartTime=end - timedelta(minutes=minutes),
            EndTime=end,
            Period=period,
            Statistics=[statistic],
        )
        points = [
            Datapoint(timestamp=item["Timestamp"], value=float(item[statistic]), unit=item.get("Unit", ""))
            for item in response.get("Datapoints", [])
            if statistic in item
        ]
        return sorted(points, key=lambda point: point.timestamp)

    def cpu_utilization(self, instance_id: str, minutes: int = 10) -> float | None:
        """The latest average `AWS/EC2 CPUUtilization` (percent) within `minutes`; None without data."""
        points = self.metric_datapoints("AWS/EC2", "CPUUtilization", instance_id, minutes=minutes)
        return points[-1].value if points else None

    def memory_used_percent(self, instance_id: str, minutes: int = 10) -> float | None:
        """The latest average `CWAgent mem_used_percent`; None when the CloudWatch agent reports nothing."""
        points = self.metric_datapoints("CWAgent", "mem_used_percent", instance_id, minutes=minutes)
        return points[-1].value if points else None

    # -- the call ------------------------------------------------------------------------

    def _call(self, client, operation: str, *, system: str | None = None, **params) -> dict:
        """One AWS operation (botocore retries included); returns its response or raises a typed error."""
        system = system or self.system
        started = time.monotonic()
        try:
            response = getattr(client, xform_name(operation))(**params)
        except Exception as exc:
            error = self._error(system, operation, exc)
            if error is None:
                raise
            self._log(system, operation, started, error.__class__.__name__, _retry_attempts(exc))
            metrics.observe_call(system, operation, call_outcome(error), time.monotonic() - started)
            raise error from None
        self._log(system, operation, started, "ok", _retry_attempts(response))
        metrics.observe_call(system, operation, "ok", time.monotonic() - started)
        return response

    def _pages(self, client, operation: str, **params):
        """Every page of a paginated operation, each through `_call`."""
        token_field = "NextToken"
        while True:
            page = self._call(client, operation, **params)
            yield page
            token = page.get(token_field)
            if not token:
                return
            params[token_field] = token

    def _error(self, system: str, operation: str, exc: Exception) -> ExternalError | None:
        """The typed error for a botocore exception (None for anything that is not one)."""
        return typed_error(system, operation, exc, connect_timeout=self.connect_timeout, read_timeout=self.read_timeout)

    def _incorrect_state(self, operation: str, instance: Instance, verb: str) -> Conflict:
        detail = f"IncorrectInstanceState: {instance.id} is {instance.state} and cannot be {verb}"
        return Conflict(self.system, operation, detail, None, {"Code": "IncorrectInstanceState"})

    def _log(self, system, operation, started, result, retries):
        logger.info(
            "%s %s -> %s in %.0f ms (%d retries)",
            system,
            operation,
            result,
            (time.monotonic() - started) * 1000,
            retries,
            extra={"system": system, "operation": operation, "status": result},
        )


_GONE = {InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED, InstanceState.UNKNOWN}


_clients: dict[tuple, EC2Client] = {}
_clients_lock = threading.Lock()


def ec2_client(region: str | None = None) -> EC2Client:
    """The EC2/CloudWatch client from settings (`LCM_AWS_REGION`, `LCM_AWS_ENDPOINT_URL`, the HTTP timeouts).

    Kept per configuration and process: boto3 clients are thread-safe, and building one loads the
    EC2 service model (~0.2 s).
    """
    config = {
        "region": region or settings.LCM_AWS_REGION,
        "endpoint_url": settings.LCM_AWS_ENDPOINT_URL or None,
        "connect_timeout": settings.LCM_HTTP_CONNECT_TIMEOUT,
        "read_timeout": settings.LCM_HTTP_READ_TIMEOUT,
        "max_attempts": settings.LCM_HTTP_RETRIES + 1,
    }
    key = (os.getpid(), os.environ.get("AWS_ACCESS_KEY_ID"), *config.values())
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = EC2Client(**config)
        return client


def _tag_dict(tags) -> dict[str, str]:
    return {item["Key"]: item.get("Value", "") for item in tags or [] if "Key" in item}


def _state_change(items: list[dict], instance_id: str) -> StateChange:
    for item in items:
        if item.get("InstanceId") == instance_id:
            return StateChange(
                instance_id=instance_id,
                previous=InstanceState.parse(item.get("PreviousState")),
                current=InstanceState.parse(item.get("CurrentState")),
            )
    return StateChange(instance_id, InstanceState.UNKNOWN, InstanceState.UNKNOWN)


def _parse_time(value) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _retry_attempts(source) -> int:
    response = source.response if isinstance(source, ClientError) else source
    if not isinstance(response, dict):
        return 0
    return int((response.get("ResponseMetadata") or {}).get("RetryAttempts") or 0)
