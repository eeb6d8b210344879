"""Representations of definitions, sessions, their history and user sessions (SPEC §5.1 names), and request bodies.

Serializers check shapes and types; the rules (ACTIVE definition, timeslot limits, state
machine) belong to `sessions.services`, whose field errors reach the client unchanged.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from lcm.api.fields import (
    AwareDateTimeField,
    BlankAsNullURLField,
    HttpURLField,
    PortMapField,
    UpperChoiceField,
    iso_utc,
    validate_storable_json,
)
from lcm.api.serializers import reason_field
from sessions.labyaml import MAX_LAB_YAML
from sessions.models import LabletDefinition, LabletSession, SessionStatusChange, UserSession
from sessions.states import MANUAL_TARGETS, DefinitionStatus, EndReason, GradingMode, SessionStatus, UserSessionStatus
from workers.states import LicenseType

MANUAL_CHOICES = [s for s in SessionStatus.values if s in MANUAL_TARGETS]

DEVICE_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "protocol": {"type": "string"},
            "host": {"type": "string"},
            "port": {"type": "integer"},
        },
        "additionalProperties": True,
    },
}
PORT_TEMPLATE_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "protocol": {"type": "string"},
            "port": {"type": "integer"},
            "node_id": {"type": "string"},
            "node_label": {"type": "string"},
        },
    },
}


class BlankAsNullCharField(serializers.CharField):
    """Output `""` as `null` (e.g. `end_reason` before a session ends)."""

    def to_representation(self, value):
        return value or None


@extend_schema_field(DEVICE_SCHEMA)
class DevicesField(serializers.JSONField):
    """`[{label, protocol, host, port}]`: how the candidate reaches each node."""


@extend_schema_field(PORT_TEMPLATE_SCHEMA)
class PortTemplateField(serializers.JSONField):
    """One entry per `protocol:port` node tag of the topology."""


# ---------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------


class ResourceRequirementsSerializer(serializers.Serializer):
    cpu_cores = serializers.IntegerField(min_value=1, max_value=10_000)
    memory_gb = serializers.IntegerField(min_value=1, max_value=10_000)
    storage_gb = serializers.IntegerField(min_value=1, max_value=10_000)


class ResourceRequirementsInputSerializer(ResourceRequirementsSerializer):
    cpu_cores = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    memory_gb = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    storage_gb = serializers.IntegerField(min_value=1, max_value=10_000, required=False)


class DefinitionSerializer(serializers.ModelSerializer):
    """A lablet definition without its topology text (lists)."""

    status = serializers.ChoiceField(choices=DefinitionStatus.choices, read_only=True)
    resource_requirements = ResourceRequirementsSerializer(source="*", read_only=True)
    license_affinity = serializers.ListField(child=serializers.ChoiceField(choices=LicenseType.choices), read_only=True)
    node_definitions_required = serializers.ListField(child=serializers.CharField(), read_only=True)
    port_template = PortTemplateField(read_only=True)

    class Meta:
        model = LabletDefinition
        fields = [
            "id", "name", "version", "status", "description", "lab_artifact_uri", "lab_yaml_hash",
            "resource_requirements", "node_count", "node_definitions_required", "port_template", "license_affinity",
            "cml_version_min", "cml_version_max", "max_duration_minutes", "boot_lead_minutes", "form_qualified_name",
            "grading_enabled", "grading_mode", "pass_percent", "hold_for_review_hours", "lab_reuse_enabled",
            "created_by", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class DefinitionDetailSerializer(DefinitionSerializer):
    """A lablet definition with its topology text."""

    class Meta(DefinitionSerializer.Meta):
        fields = [*DefinitionSerializer.Meta.fields, "lab_yaml"]
        read_only_fields = fields


class DefinitionWriteSerializer(serializers.Serializer):
    """POST body: a new definition (or a new version of a name). The topology is validated by the service."""

    name = serializers.CharField(max_length=200)
    version = serializers.CharField(max_length=50, required=False, help_text="Semantic version; default 1.0.0.")
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    lab_yaml = serializers.CharField(max_length=MAX_LAB_YAML, trim_whitespace=False, help_text="CML topology text.")
    lab_artifact_uri = serializers.CharField(required=False, allow_blank=True, max_length=500)
    resource_requirements = ResourceRequirementsInputSerializer(required=False)
    license_affinity = serializers.ListField(
        child=UpperChoiceField(choices=LicenseType.choices), required=False, max_length=3
    )
    cml_version_min = serializers.CharField(required=False, allow_blank=True, max_length=20)
    cml_version_max = serializers.CharField(required=False, allow_blank=True, max_length=20)
    max_duration_minutes = serializers.IntegerField(required=False, min_value=1, max_value=7 * 24 * 60)
    boot_lead_minutes = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=24 * 60)
    form_qualified_name = serializers.CharField(required=False, allow_blank=True, max_length=300)
    grading_enabled = serializers.BooleanField(required=False)
    grading_mode = serializers.ChoiceField(
        choices=GradingMode.choices, required=False, help_text="auto (the loop grades), manual (an instructor "
        "starts or skips grading) or none; default: auto when grading_enabled, else none."
    )  # fmt: skip
    pass_percent = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=100,
        help_text="Pass mark when the Grading Engine sends no cut score (null: the system default).",
    )  # fmt: skip
    hold_for_review_hours = serializers.IntegerField(
        required=False, min_value=0, max_value=24 * 30, help_text="Keep the stopped lab this long after grading."
    )
    lab_reuse_enabled = serializers.BooleanField(required=False)
    status = UpperChoiceField(choices=DefinitionStatus.choices, required=False, help_text="Default ACTIVE.")


class DefinitionPatchSerializer(DefinitionWriteSerializer):
    """PATCH body: content fields publish a new version (published versions are immutable); `status` alone
    changes this version's status."""

    name = serializers.CharField(max_length=200, required=False)
    lab_yaml = serializers.CharField(max_length=MAX_LAB_YAML, trim_whitespace=False, required=False)
    status = UpperChoiceField(choices=DefinitionStatus.choices, required=False)
    reason = reason_field()


# ---------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------


class SessionSerializer(serializers.ModelSerializer):
    """A lablet session."""

    definition_id = serializers.UUIDField(read_only=True)
    definition_name = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=SessionStatus.choices, read_only=True)
    worker_id = serializers.UUIDField(read_only=True, allow_null=True)
    worker_name = serializers.CharField(read_only=True, allow_null=True)
    lab_record_id = serializers.UUIDField(read_only=True, allow_null=True)
    allocated_ports = PortMapField(read_only=True)
    end_reason = BlankAsNullCharField(read_only=True, allow_null=True, help_text=" | ".join(EndReason.values))

    class Meta:
        model = LabletSession
        fields = [
            "id", "definition_id", "definition_name", "definition_version", "owner", "reservation_id", "status",
            "timeslot_start", "timeslot_end", "worker_id", "worker_name", "lab_record_id", "cml_lab_id",
            "allocated_ports", "scheduled_at", "started_at", "ended_at", "duration_seconds", "end_reason",
            "end_reason_detail", "cleanup_pending", "grade_result", "attempts", "last_error", "next_attempt_at",
            "degraded_at", "degraded_reason", "created_by", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def to_representation(self, session):
        """The fields above, built directly: a page of sessions is the API's hottest path.

        Equal to DRF's generic rendering of the declared fields (a test compares the two for
        sessions in every state); the declarations stay the source of the OpenAPI schema.
        Sessions come from `sessions.api.views.session_rows`, which joins in the two names.
        """
        return {
            "id": str(session.pk),
            "definition_id": str(session.definition_id),
            "definition_name": session.definition_name,
            "definition_version": session.definition_version,
            "owner": session.owner,
            "reservation_id": session.reservation_id,
            "status": session.status,
            "timeslot_start": iso_utc(session.timeslot_start),
            "timeslot_end": iso_utc(session.timeslot_end),
            "worker_id": str(session.worker_id) if session.worker_id else None,
            "worker_name": session.worker_name,
            "lab_record_id": str(session.lab_record_id) if session.lab_record_id else None,
            "cml_lab_id": session.cml_lab_id,
            "allocated_ports": session.allocated_ports,
            "scheduled_at": iso_utc(session.scheduled_at),
            "started_at": iso_utc(session.started_at),
            "ended_at": iso_utc(session.ended_at),
            "duration_seconds": session.duration_seconds,
            "end_reason": session.end_reason or None,
            "end_reason_detail": session.end_reason_detail,
            "cleanup_pending": session.cleanup_pending,
            "grade_result": session.grade_result,
            "attempts": session.attempts,
            "last_error": session.last_error,
            "next_attempt_at": iso_utc(session.next_attempt_at),
            "degraded_at": iso_utc(session.degraded_at),
            "degraded_reason": session.degraded_reason,
            "created_by": session.created_by,
            "created_at": iso_utc(session.created_at),
            "updated_at": iso_utc(session.updated_at),
        }


class SessionCreateSerializer(serializers.Serializer):
    """POST body: book a session. No start = ASAP; no end = start + the definition's max duration."""

    definition_id = serializers.UUIDField()
    owner = serializers.CharField(max_length=200, help_text="The candidate's id.")
    timeslot_start = AwareDateTimeField(required=False, allow_null=True)
    timeslot_end = AwareDateTimeField(required=False, allow_null=True)
    reservation_id = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=200,
        help_text="External id, unique: booking it again answers 409 with the existing session's id.",
    )
    reason = reason_field()
    on_capacity = serializers.ChoiceField(
        choices=["refuse", "warn"], required=False, allow_null=True,
        help_text="When the fleet cannot hold it (SPEC §10): refuse (409) or book with a warning "
        "(default: SystemSettings.admission).",
    )  # fmt: skip


class SessionTransitionSerializer(serializers.Serializer):
    """POST body: a manual status change."""

    status = UpperChoiceField(
        choices=MANUAL_CHOICES,
        error_messages={
            "invalid_choice": (
                f'"{{input}}" is not a manual target; expected one of {", ".join(MANUAL_CHOICES)} '
                "(terminate with DELETE)"
            )
        },
        help_text="Case-insensitive.",
    )
    reason = reason_field()
    expected_status = UpperChoiceField(
        choices=SessionStatus.choices,
        required=False,
        help_text="Only move if the session is in this status now (compare-and-set).",
    )


class SessionExtendSerializer(serializers.Serializer):
    """POST body: move the timeslot end later."""

    timeslot_end = AwareDateTimeField()
    reason = reason_field()


class SessionRequeueSerializer(serializers.Serializer):
    """POST body of a requeue: a reason, and whether to keep the session off the worker it leaves."""

    reason = reason_field()
    exclude_worker = serializers.BooleanField(
        default=False,
        help_text="A SCHEDULED session is never placed again on the worker it leaves (named in the history).",
    )


class HistorySerializer(serializers.ModelSerializer):
    """One row of a session's status timeline (the session's own or a child's, by `entity`)."""

    from_status = BlankAsNullCharField(read_only=True, allow_null=True)
    request_id = BlankAsNullCharField(read_only=True, allow_null=True)

    class Meta:
        model = SessionStatusChange
        fields = ["id", "entity", "from_status", "to_status", "at", "actor", "reason", "request_id"]
        read_only_fields = fields


class UserSessionSerializer(serializers.ModelSerializer):
    """The candidate's LDS session: login URL and devices."""

    session_id = serializers.UUIDField(source="lablet_session_id", read_only=True)
    status = serializers.ChoiceField(choices=UserSessionStatus.choices, read_only=True)
    devices = DevicesField(read_only=True)
    login_url = BlankAsNullURLField(read_only=True)

    class Meta:
        model = UserSession
        fields = [
            "id", "session_id", "status", "lds_session_id", "lds_part_id", "login_url", "devices", "lds_ends_at",
            "error_message", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class UserSessionWriteSerializer(serializers.Serializer):
    """Internal API body: create or update the session's UserSession (status moves through its state machine)."""

    status = UpperChoiceField(choices=UserSessionStatus.choices, required=False)
    lds_session_id = serializers.CharField(required=False, allow_blank=True, max_length=200)
    lds_part_id = serializers.CharField(required=False, allow_blank=True, max_length=200)
    login_url = HttpURLField(required=False, allow_blank=True, max_length=1000)
    # Each device's shape (flat, bounded: label, protocol, host, port) is checked by the service, naming `devices`.
    devices = serializers.ListField(
        child=serializers.DictField(), required=False, max_length=1000, validators=[validate_storable_json]
    )
    error_message = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    reason = reason_field()


# ---------------------------------------------------------------------------------------
# Internal API bodies
# ---------------------------------------------------------------------------------------


def expected_status_field():
    """The optional compare-and-set guard of a transition."""
    return UpperChoiceField(
        choices=SessionStatus.choices,
        required=False,
        help_text="Only move if the session is in this status now (compare-and-set).",
    )


class ScheduleSerializer(serializers.Serializer):
    """Internal API body: PENDING → SCHEDULED onto this worker."""

    worker_id = serializers.UUIDField()
    expected_status = expected_status_field()
    reason = reason_field()


class InternalTransitionSerializer(serializers.Serializer):
    """Internal API body: any transition the state machine allows."""

    status = UpperChoiceField(choices=SessionStatus.choices, help_text="Any target the state machine allows.")
    end_reason = UpperChoiceField(
        choices=EndReason.choices, required=False, help_text="For TERMINATED (default TERMINATED)."
    )
    expected_status = expected_status_field()
    reason = reason_field()


class ReadyUserSessionSerializer(UserSessionWriteSerializer):
    """The UserSession created with READY (its history row carries the transition's reason)."""

    reason = None


class ReadySerializer(serializers.Serializer):
    """Internal API body: INSTANTIATING → READY with the UserSession."""

    user_session = ReadyUserSessionSerializer(
        required=False, help_text="Creates the UserSession in the same step (READY needs one)."
    )
    expected_status = expected_status_field()
    reason = reason_field()
