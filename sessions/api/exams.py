"""REST for exams (SPEC §8): book a roster, list and watch exams, act on a whole exam. Thin over `sessions.exams`.

Instructors and admins, like the session API. Booking answers 201 with the exam, its session ids and the capacity
verdict; 400 names each bad row (`candidates[3].owner`); 409 `{detail, code: "capacity", capacity: {needed,
available, shortfall, reasons}}` when admission refuses it (see `lcm.api.exceptions`).
"""

from django.db.models import Count
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from lcm.api.fields import AwareDateTimeField
from lcm.api.permissions import IsInstructor
from lcm.api.viewsets import ApiViewSet
from lcm.roles import is_admin
from scheduling.api.serializers import VerdictSerializer
from sessions.exams import EXAM_ACTIONS, MAX_CANDIDATES, MAX_EXTEND_MINUTES, exam_action, exam_book, exam_roster
from sessions.models import Exam, LabletSession
from sessions.states import SessionStatus


class CandidateSerializer(serializers.Serializer):
    owner = serializers.CharField(allow_blank=True, trim_whitespace=False, help_text="The candidate's id (required).")
    reservation_id = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="External id, unique across LCM."
    )


class ExamCreateSerializer(serializers.Serializer):
    """POST body: book an exam. No start = as soon as possible; no end = start + the definition's maximum."""

    name = serializers.CharField(max_length=200)
    definition_id = serializers.UUIDField()
    timeslot_start = AwareDateTimeField(required=False, allow_null=True)
    timeslot_end = AwareDateTimeField(required=False, allow_null=True)
    candidates = CandidateSerializer(many=True, max_length=MAX_CANDIDATES, allow_empty=False)
    on_capacity = serializers.ChoiceField(
        choices=["refuse", "warn"], required=False, allow_null=True,
        help_text="What to do when the fleet cannot hold it (default: SystemSettings.admission).",
    )  # fmt: skip
    notes = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class ExamSerializer(serializers.ModelSerializer):
    """An exam with its sessions counted by status (the exam's own status is derived from them)."""

    definition_id = serializers.UUIDField(read_only=True)
    counts = serializers.SerializerMethodField(help_text="Sessions per status (every status present).")
    session_count = serializers.SerializerMethodField()

    class Meta:
        model = Exam
        fields = [
            "id", "name", "definition_id", "timeslot_start", "timeslot_end", "notes", "created_by", "created_at",
            "session_count", "counts",
        ]  # fmt: skip

    def _counts(self, exam) -> dict:
        return self.context.get("counts", {}).get(exam.pk) or dict.fromkeys(SessionStatus.values, 0)

    def get_counts(self, exam) -> dict[str, int]:
        return self._counts(exam)

    def get_session_count(self, exam) -> int:
        return sum(self._counts(exam).values())


class RosterRowSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    owner = serializers.CharField()
    reservation_id = serializers.CharField(allow_null=True)
    status = serializers.CharField()
    timeslot_start = serializers.DateTimeField()
    timeslot_end = serializers.DateTimeField()
    time_left_seconds = serializers.IntegerField(allow_null=True, help_text="Until the end; null once it ended.")
    score = serializers.DecimalField(max_digits=10, decimal_places=2, allow_null=True)
    max_score = serializers.DecimalField(max_digits=10, decimal_places=2, allow_null=True)
    percent = serializers.FloatField(allow_null=True)
    result = serializers.CharField(allow_null=True, help_text="PASS, FAIL or null.")
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)


class ExamDetailSerializer(ExamSerializer):
    sessions = serializers.SerializerMethodField()

    class Meta(ExamSerializer.Meta):
        fields = [*ExamSerializer.Meta.fields, "sessions"]

    @extend_schema_field(RosterRowSerializer(many=True))
    def get_sessions(self, exam) -> list:
        return RosterRowSerializer(exam_roster(exam), many=True).data


class ExamBookedSerializer(serializers.Serializer):
    exam = ExamSerializer()
    session_ids = serializers.ListField(child=serializers.UUIDField())
    capacity = VerdictSerializer(allow_null=True, help_text="The capacity verdict; null when admission is off.")


class ExamActionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=list(EXAM_ACTIONS))
    minutes = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_EXTEND_MINUTES, help_text="For extend."
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class ActionResultSerializer(serializers.Serializer):
    session_id = serializers.UUIDField()
    owner = serializers.CharField()
    result = serializers.ChoiceField(choices=["ok", "refused"])
    detail = serializers.CharField()


class ExamActionResultSerializer(serializers.Serializer):
    results = ActionResultSerializer(many=True)
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="{ok: n, refused: m}")


def counts_by_exam(exam_ids) -> dict:
    """`{exam id: {status: count}}` (every status present) in one query."""
    counts = {pk: dict.fromkeys(SessionStatus.values, 0) for pk in exam_ids}
    rows = LabletSession.objects.filter(exam_id__in=list(counts)).order_by().values("exam_id", "status")
    for row in rows.annotate(n=Count("pk")):
        counts[row["exam_id"]][row["status"]] = row["n"]
    return counts


@extend_schema_view(
    list=extend_schema(summary="List exams"),
    retrieve=extend_schema(summary="One exam: counts by state and each session (owner, status, time left, score)"),
)
class ExamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Exams (SPEC §8): a roster booked together on one definition and timeslot (instructors and admins)."""

    queryset = Exam.objects.all()
    serializer_class = ExamSerializer
    permission_classes = [IsInstructor]
    conflict_actions = ("create",)

    def get_serializer_class(self):
        return ExamDetailSerializer if self.action == "retrieve" else ExamSerializer

    def list(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        context = {**self.get_serializer_context(), "counts": counts_by_exam([e.pk for e in page])}
        return self.get_paginated_response(ExamSerializer(page, many=True, context=context).data)

    def retrieve(self, request, pk=None):
        exam = self.get_object()
        context = {**self.get_serializer_context(), "counts": counts_by_exam([exam.pk])}
        return Response(ExamDetailSerializer(exam, context=context).data)

    @extend_schema(summary="Book an exam", request=ExamCreateSerializer, responses={201: ExamBookedSerializer})
    def create(self, request):
        """Every candidate's session or none: rows are checked (400 naming `candidates[i].field`), then the capacity
        check; admission `refuse` answers 409 with `capacity` when the fleet cannot hold the roster."""
        data = self.read_body(ExamCreateSerializer)
        booking = exam_book(
            name=data["name"], definition=data["definition_id"], timeslot_start=data.get("timeslot_start"),
            timeslot_end=data.get("timeslot_end"), candidates=[dict(c) for c in data["candidates"]],
            actor=request.user, on_capacity=data.get("on_capacity"), notes=data.get("notes", ""),
        )  # fmt: skip
        exam = booking.exam
        body = {
            "exam": ExamSerializer(exam, context={"counts": counts_by_exam([exam.pk])}).data,
            "session_ids": [str(s.pk) for s in booking.sessions],
            "capacity": VerdictSerializer(booking.verdict.as_dict()).data if booking.verdict else None,
        }
        location = reverse("api:exam-detail", kwargs={"pk": exam.pk})
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})

    @extend_schema(
        summary="Act on every session of an exam",
        description="start | extend (+minutes) | finish | terminate, each session through its own service; "
        "a session the action does not apply to is `refused` and left unchanged.",
        request=ExamActionSerializer,
        responses={200: ExamActionResultSerializer},
    )
    @action(detail=True, methods=["post"], url_path="actions/")
    def actions(self, request, pk=None):
        exam = self.get_object()
        data = self.read_body(ExamActionSerializer)
        results = exam_action(
            exam, data["action"], actor=request.user, minutes=data.get("minutes"), reason=data.get("reason", ""),
            is_admin=is_admin(request.user),
        )  # fmt: skip
        counts = {"ok": sum(r.result == "ok" for r in results), "refused": sum(r.result == "refused" for r in results)}
        return Response({"results": [r.as_dict() for r in results], "counts": counts})
