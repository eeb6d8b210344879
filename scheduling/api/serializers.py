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
