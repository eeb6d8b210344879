"""Representations of grading sessions and score reports (SPEC §2.3, §5.1), and the internal API's bodies."""

from rest_framework import serializers

from grading.models import EvidenceItem, GradingSession, Regrade, ScoreReport, ScoreSection
from grading.states import GradingStatus, RegradeStatus
from lcm.api.fields import AwareDateTimeField, UpperChoiceField
from lcm.api.serializers import reason_field

MAX_SCORE_VALUE = 99_999_999


class GradingSessionSerializer(serializers.ModelSerializer):
    """The Grading Engine's view of one session being graded."""

    session_id = serializers.UUIDField(source="lablet_session_id", read_only=True)
    status = serializers.ChoiceField(choices=GradingStatus.choices, read_only=True)

    class Meta:
        model = GradingSession
        fields = [
            "id", "session_id", "status", "grading_session_id", "grading_part_id", "pod_id", "error_message",
            "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class ScoreSectionSerializer(serializers.ModelSerializer):
    score = serializers.FloatField(read_only=True)
    max_score = serializers.FloatField(read_only=True)
    weight = serializers.FloatField(read_only=True)

    class Meta:
        model = ScoreSection
        fields = ["name", "score", "max_score", "weight", "passed"]
        read_only_fields = fields


class ScoreReportSerializer(serializers.ModelSerializer):
    """An immutable score report with its sections."""

    session_id = serializers.UUIDField(source="lablet_session_id", read_only=True)
    owner = serializers.CharField(source="lablet_session.owner", read_only=True)
    definition_id = serializers.UUIDField(source="lablet_session.definition_id", read_only=True)
    definition_name = serializers.CharField(source="lablet_session.definition.name", read_only=True)
    definition_version = serializers.CharField(source="lablet_session.definition_version", read_only=True)
    grading_session_id = serializers.UUIDField(read_only=True, allow_null=True)
    score = serializers.FloatField(read_only=True)
    max_score = serializers.FloatField(read_only=True)
    cut_score = serializers.FloatField(read_only=True)
    sections = ScoreSectionSerializer(many=True, read_only=True)

    class Meta:
        model = ScoreReport
        fields = [
            "id", "session_id", "owner", "definition_id", "definition_name", "definition_version",
            "grading_session_id", "score", "max_score", "cut_score", "passed", "manual", "submitted_at",
            "created_by", "created_at", "sections",
        ]  # fmt: skip
        read_only_fields = fields


class GradingSessionWriteSerializer(serializers.Serializer):
    """Internal API body: create or update the session's GradingSession (status moves forward or to FAULTED)."""

    status = UpperChoiceField(choices=GradingStatus.choices, required=False)
    grading_session_id = serializers.CharField(required=False, allow_blank=True, max_length=200)
    grading_part_id = serializers.CharField(required=False, allow_blank=True, max_length=200)
    pod_id = serializers.CharField(required=False, allow_blank=True, max_length=200)
    error_message = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    reason = reason_field()


class ScoreSectionWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=300)
    score = serializers.FloatField(min_value=0, max_value=MAX_SCORE_VALUE)
    max_score = serializers.FloatField(min_value=0, max_value=MAX_SCORE_VALUE)
    weight = serializers.FloatField(required=False, min_value=0, max_value=999)
    passed = serializers.BooleanField(required=False, allow_null=True)


class ScoreReportWriteSerializer(serializers.Serializer):
    """Internal API body: store the session's score report (passed = score ≥ cut_score)."""

    score = serializers.FloatField(min_value=0, max_value=MAX_SCORE_VALUE)
    max_score = serializers.FloatField(min_value=0, max_value=MAX_SCORE_VALUE)
    cut_score = serializers.FloatField(min_value=0, max_value=MAX_SCORE_VALUE)
    sections = ScoreSectionWriteSerializer(many=True, required=False, max_length=500)
    grading_session_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="LCM id of the GradingSession it came from (default: the current)."
    )
    submitted_at = AwareDateTimeField(required=False, allow_null=True)
    manual = serializers.BooleanField(required=False)


class EvidenceItemSerializer(serializers.ModelSerializer):
    """One stored object of a session's evidence (SPEC §9); `download` is where its bytes are."""

    session_id = serializers.UUIDField(source="lablet_session_id", read_only=True)
    state = serializers.CharField(read_only=True)
    download = serializers.SerializerMethodField()

    class Meta:
        model = EvidenceItem
        fields = [
            "id", "session_id", "kind", "name", "object_key", "sha256", "size", "content_type", "created_at",
            "expired_at", "state", "download",
        ]  # fmt: skip
        read_only_fields = fields

    def get_download(self, item) -> str:
        return f"/api/v1/sessions/{item.lablet_session_id}/evidence/{item.pk}/"


class RegradeSerializer(serializers.ModelSerializer):
    """A re-grade of an ARCHIVED session (SPEC §9) and how far it got."""

    session_id = serializers.UUIDField(source="lablet_session_id", read_only=True)
    status = serializers.ChoiceField(choices=RegradeStatus.choices, read_only=True)
    worker_id = serializers.UUIDField(read_only=True)
    score_report_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Regrade
        fields = [
            "id", "session_id", "status", "requested_by", "worker_id", "score_report_id", "error", "last_error",
            "created_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields
