"""A session's grading children in the REST API (SPEC §5.1): read under `/api/v1/sessions/{id}/`, written by
controllers and tools under `/api/internal/sessions/{id}/`.

They live here, registered on the `sessions` prefix beside the sessions app's ViewSets by
`lcm.api.urls`, because grading depends on sessions and never the reverse.
"""

from django.db import transaction
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from grading.api.serializers import (
    GradingSessionSerializer,
    GradingSessionWriteSerializer,
    ScoreReportSerializer,
    ScoreReportWriteSerializer,
)
from grading.models import GradingSession, ScoreReport
from grading.services import grading_session_create, grading_session_update, score_report_create
from lcm.api.authentication import InternalApiKeyAuthentication
from lcm.api.permissions import InternalApiKey, IsInstructor
from lcm.api.viewsets import ApiViewSet
from sessions.api.views import child_route, current_child, newest_child
from sessions.models import LabletSession


def _grading_session_create(session, target, *, actor, reason, **fields):
    """A new GradingSession, moved on to `target` in the same transaction when the body names one."""
    with transaction.atomic():
        grading = grading_session_create(session, actor=actor, reason=reason, **fields)
        if target is not None:
            grading = grading_session_update(grading, actor=actor, status=target, reason=reason)
    return grading


def _reports():
    return ScoreReport.objects.select_related("lablet_session__definition").prefetch_related("sections")


class SessionGradingViewSet(ApiViewSet):
    """A session's grading session and score report (instructors and admins)."""

    queryset = LabletSession.objects.all()
    permission_classes = [IsInstructor]

    def _child(self, queryset):
        return current_child(self, queryset)

    @extend_schema(
        summary="The session's GradingSession (404 until it exists)", responses={200: GradingSessionSerializer}
    )
    @action(detail=True, methods=["get"], url_path="grading-session")
    def grading_session(self, request, pk=None):
        return Response(GradingSessionSerializer(self._child(GradingSession.objects.all())).data)

    @extend_schema(summary="The session's score report (404 until it exists)", responses={200: ScoreReportSerializer})
    @action(detail=True, methods=["get"], url_path="score-report")
    def score_report(self, request, pk=None):
        return Response(ScoreReportSerializer(self._child(_reports())).data)


class InternalSessionGradingViewSet(ApiViewSet):
    """Controllers and tools write a session's grading session and score report (internal API)."""

    queryset = LabletSession.objects.all()
    authentication_classes = [InternalApiKeyAuthentication]
    permission_classes = [InternalApiKey]
    conflict_actions = ("grading_session", "score_report")
    checks_roles = False

    grading_session = child_route(
        "grading-session",
        summary="Create or update the session's GradingSession (internal)",
        description=(
            "Creates it (201) when the session has none; otherwise updates the current one (200). `status` moves "
            "forward only (or to FAULTED); a refused move is 409."
        ),
        write=GradingSessionWriteSerializer,
        read=GradingSessionSerializer,
        children=GradingSession.objects,
        create=_grading_session_create,
        update=grading_session_update,
    )

    @extend_schema(
        summary="Store the session's score report (internal)",
        description=(
            "Immutable; sets the session's `grade_result`. `passed` is score ≥ cut_score. "
            "409 for a TERMINATED, ARCHIVED or EXPIRED session."
        ),
        request=ScoreReportWriteSerializer,
        responses={201: ScoreReportSerializer},
    )
    @action(detail=True, methods=["post"], url_path="score-report")
    def score_report(self, request, pk=None):
        session = self.get_object()
        data = self.read_body(ScoreReportWriteSerializer)
        report = score_report_create(
            session,
            actor=request.user,
            score=data["score"],
            max_score=data["max_score"],
            cut_score=data["cut_score"],
            sections=[dict(section) for section in data.get("sections", [])],
            grading_session=self._grading_session_for(session, data.get("grading_session_id")),
            submitted_at=data.get("submitted_at"),
            manual=data.get("manual", False),
        )
        location = reverse("api:session-grading-score-report", kwargs={"pk": session.pk})
        return Response(
            ScoreReportSerializer(_reports().get(pk=report.pk)).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": location},
        )

    @staticmethod
    def _grading_session_for(session, grading_session_id):
        if grading_session_id is None:
            return newest_child(GradingSession.objects.all(), session)
        grading = GradingSession.objects.filter(pk=grading_session_id, lablet_session=session).first()
        if grading is None:
            raise ValidationError({"grading_session_id": ["is not a grading session of this session"]})
        return grading
