"""Representations of workers, templates and lab records (SPEC §2.4, §5.1), and the admin request bodies."""

import uuid

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from lcm.api.fields import BlankAsNullURLField, PortMapField, UpperChoiceField
from lcm.api.serializers import reason_field
from workers.models import CMLWorker, LabRecord, WorkerTemplate
from workers.states import DesiredStatus, LabStatus, LicenseStatus, LicenseType, WorkerStatus

MAX_CAPACITY = 100_000


class CapacitySerializer(serializers.Serializer):
    """Declared capacity."""

    cpu_cores = serializers.IntegerField()
    memory_gb = serializers.IntegerField()
    storage_gb = serializers.IntegerField()
    max_nodes = serializers.IntegerField()


class UsageSerializer(serializers.Serializer):
    """What the sessions holding capacity on the worker use (derived, never a counter)."""

    cpu_cores = serializers.IntegerField()
    memory_gb = serializers.IntegerField()
    storage_gb = serializers.IntegerField()
    nodes = serializers.IntegerField()
    ports = serializers.IntegerField()
    sessions = serializers.IntegerField()


class MetricsSerializer(serializers.Serializer):
    cpu_percent = serializers.FloatField(allow_null=True)
    memory_percent = serializers.FloatField(allow_null=True)
    running_nodes = serializers.IntegerField(allow_null=True)
    collected_at = serializers.DateTimeField(source="metrics_collected_at", allow_null=True)


class WorkerTemplateSerializer(serializers.ModelSerializer):
    """How to launch a CML worker."""

    license_type = serializers.ChoiceField(choices=LicenseType.choices, read_only=True)
    capacity = CapacitySerializer(source="*", read_only=True)
    cost_per_hour = serializers.FloatField(read_only=True)

    class Meta:
        model = WorkerTemplate
        fields = [
            "id", "name", "description", "instance_type", "ami_name_pattern", "region", "license_type", "capacity",
            "port_range_start", "port_range_end", "startup_minutes", "cost_per_hour", "enabled", "created_at",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class WorkerSerializer(serializers.ModelSerializer):
    """A CML worker: `status` is what is, `desired_status` what an admin asked for."""

    template_id = serializers.UUIDField(read_only=True, allow_null=True)
    template_name = serializers.CharField(source="template.name", read_only=True, allow_null=True, default=None)
    license_type = serializers.ChoiceField(choices=LicenseType.choices, read_only=True)
    license_status = serializers.ChoiceField(choices=LicenseStatus.choices, read_only=True)
    status = serializers.ChoiceField(choices=WorkerStatus.choices, read_only=True)
    desired_status = serializers.ChoiceField(choices=DesiredStatus.choices, read_only=True)
    capacity = CapacitySerializer(source="*", read_only=True)
    cml_base_url = BlankAsNullURLField(read_only=True)
    usage = serializers.SerializerMethodField()
    metrics = MetricsSerializer(source="*", read_only=True)

    class Meta:
        model = CMLWorker
        fields = [
            "id", "name", "template_id", "template_name", "region", "aws_instance_id", "instance_type", "ami_id",
            "public_ip", "private_ip", "cml_base_url", "cml_version", "license_type", "license_status",
            "license_error", "capacity", "usage", "port_range_start", "port_range_end", "status", "desired_status",
            "service_status", "metrics", "last_activity_at", "idle_detection_enabled", "drain_started_at",
            "drain_deadline", "attempts", "last_error", "next_attempt_at", "created_by", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(UsageSerializer(allow_null=True))
    def get_usage(self, worker):
        """From `context["capacities"]` (`scheduling.selectors.worker_capacities`, one query per page)."""
        capacity = self.context.get("capacities", {}).get(str(worker.pk))
        if capacity is None:
            return None
        return {
            "cpu_cores": capacity.cpu_used,
            "memory_gb": capacity.memory_used,
            "storage_gb": capacity.storage_used,
            "nodes": capacity.nodes_used,
            "ports": capacity.ports_used,
            "sessions": capacity.sessions,
        }


class WorkerCreateSerializer(serializers.Serializer):
    """POST body: a worker from a template (`template`, `name` optional), or an existing CML endpoint
    (`cml_base_url`, `name`, capacity; `status` defaults to RUNNING)."""

    template = serializers.CharField(required=False, max_length=100, help_text="Template name or id.")
    name = serializers.CharField(required=False, max_length=100)
    cml_base_url = serializers.URLField(required=False, max_length=500)
    cml_version = serializers.RegexField(r"^\d+(\.\d+){0,2}$", required=False, max_length=20)
    license_type = UpperChoiceField(choices=LicenseType.choices, required=False)
    region = serializers.CharField(required=False, max_length=50)
    aws_instance_id = serializers.CharField(required=False, max_length=50)
    instance_type = serializers.CharField(required=False, max_length=50)
    public_ip = serializers.IPAddressField(required=False)
    private_ip = serializers.IPAddressField(required=False)
    cpu_cores = serializers.IntegerField(required=False, min_value=0, max_value=MAX_CAPACITY)
    memory_gb = serializers.IntegerField(required=False, min_value=0, max_value=MAX_CAPACITY)
    storage_gb = serializers.IntegerField(required=False, min_value=0, max_value=MAX_CAPACITY)
    max_nodes = serializers.IntegerField(required=False, min_value=0, max_value=MAX_CAPACITY)
    port_range_start = serializers.IntegerField(required=False, min_value=1, max_value=65535)
    port_range_end = serializers.IntegerField(required=False, min_value=1, max_value=65535)
    status = UpperChoiceField(choices=WorkerStatus.choices, required=False)
    reason = reason_field()

    def validate_template(self, value):
        template = WorkerTemplate.objects.filter(name=value).first()
        if template is None:
            try:
                template = WorkerTemplate.objects.filter(pk=uuid.UUID(value)).first()
            except ValueError:  # not a name and not an id
                template = None
        if template is None:
            raise serializers.ValidationError(f"no worker template named {value!r}")
        if not template.enabled:
            raise serializers.ValidationError(f"worker template {template.name} is disabled")
        return template

    def validate(self, attrs):
        if "template" not in attrs and "cml_base_url" not in attrs:
            raise serializers.ValidationError(
                {"template": ["give a template (or a cml_base_url to register an existing endpoint)"]}
            )
        if "template" not in attrs and "name" not in attrs:
            raise serializers.ValidationError({"name": ["is required when registering an endpoint"]})
        start, end = attrs.get("port_range_start"), attrs.get("port_range_end")
        template = attrs.get("template")
        start = start if start is not None else (template.port_range_start if template else 2000)
        end = end if end is not None else (template.port_range_end if template else 9999)
        if start > end:
            raise serializers.ValidationError({"port_range_end": ["must not be lower than port_range_start"]})
        instance_id = attrs.get("aws_instance_id")
        if instance_id and CMLWorker.objects.filter(aws_instance_id=instance_id).exists():
            raise serializers.ValidationError({"aws_instance_id": [f"{instance_id} is already registered"]})
        return attrs


class LicenseSerializer(serializers.Serializer):
    """POST body of licence registration. The token never appears in history, logs or responses."""

    token = serializers.CharField(max_length=256, write_only=True, help_text="The CML licence token.")
    reason = reason_field()


class LabRecordSerializer(serializers.ModelSerializer):
    """One CML lab on one worker, with the ports it holds."""

    worker_id = serializers.UUIDField(read_only=True)
    worker_name = serializers.CharField(source="worker.name", read_only=True)
    definition_id = serializers.UUIDField(read_only=True, allow_null=True)
    active_session_id = serializers.UUIDField(read_only=True, allow_null=True)
    status = serializers.ChoiceField(choices=LabStatus.choices, read_only=True)
    ports = PortMapField(read_only=True)

    class Meta:
        model = LabRecord
        fields = [
            "id", "worker_id", "worker_name", "cml_lab_id", "title", "definition_id", "status", "cml_state",
            "node_count", "last_synced_at", "active_session_id", "ports", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields
