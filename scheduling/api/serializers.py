"""Placement preview request and answer (SPEC §3.2 dry run)."""

from rest_framework import serializers

from lcm.api.fields import AwareDateTimeField


class PreviewRequestSerializer(serializers.Serializer):
    definition_id = serializers.UUIDField()
    timeslot_start = AwareDateTimeField(
        required=False, allow_null=True, help_text="Echoed back; placement judges the fleet as it is now."
    )


class DemandSerializer(serializers.Serializer):
    cpu_cores = serializers.IntegerField()
    memory_gb = serializers.IntegerField()
    storage_gb = serializers.IntegerField()
    node_count = serializers.IntegerField()
    ports = serializers.IntegerField()
    license_affinity = serializers.ListField(child=serializers.CharField())


class CandidateSerializer(serializers.Serializer):
    """One worker judged for the session: `fits` with a `score` (higher is preferred), or a `rejection`."""

    worker_id = serializers.UUIDField()
    name = serializers.CharField()
    fits = serializers.BooleanField()
    score = serializers.FloatField(allow_null=True)
    reusable_lab = serializers.BooleanField()
    rejection = serializers.CharField(allow_null=True)


class PreviewSerializer(serializers.Serializer):
    """Every worker judged: the chosen one first, then the other fits by preference, then the rejections."""

    definition_id = serializers.UUIDField()
    timeslot_start = serializers.DateTimeField(allow_null=True)
    demand = DemandSerializer()
    chosen_worker_id = serializers.UUIDField(allow_null=True)
    candidates = CandidateSerializer(many=True)


class CapacityCheckSerializer(serializers.Serializer):
    """POST body of the capacity check (SPEC §10): `count` more sessions of a definition over a timeslot."""

    definition_id = serializers.UUIDField()
    timeslot_start = AwareDateTimeField(required=False, allow_null=True, help_text="No start: as soon as possible.")
    timeslot_end = AwareDateTimeField(
        required=False, allow_null=True, help_text="No end: start + the definition's maximum duration."
    )
    count = serializers.IntegerField(min_value=1, max_value=1000, default=1)


class VerdictSerializer(serializers.Serializer):
    """The capacity check's answer (SPEC §10): numbers at the worst instant of the window, and why."""

    fits = serializers.BooleanField()
    needed = serializers.DictField(
        child=serializers.IntegerField(), help_text="Per dimension: cpu, memory_gb, storage_gb, nodes, sessions."
    )
    available = serializers.DictField(
        child=serializers.IntegerField(), help_text="What the workers that can take it offer (autoscaling included)."
    )
    shortfall = serializers.DictField(
        child=serializers.IntegerField(), help_text="Only the dimensions that fall short, by how much."
    )
    reasons = serializers.ListField(child=serializers.CharField())
    at = serializers.DateTimeField(allow_null=True, help_text="The instant the numbers are taken at (the worst one).")
