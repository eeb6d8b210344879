"""The internal API for controllers and tools (SPEC §5.1), under `/api/internal/`, behind `X-API-Key`.

Unlike the public API it may drive a session through any transition its state machine
allows (SCHEDULED onto a worker, READY with the UserSession, EXPIRED, …), and it writes the
children (UserSession, GradingSession, ScoreReport). It calls the same services as
everything else, so the same rules and the same 409s apply.
"""

from django.db import transaction
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status
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
from lcm.api.permissions import InternalApiKey
from lcm.api.viewsets import ApiViewSet
from sessions.api.serializers import (
    InternalTransitionSerializer,
    ReadySerializer,
    ScheduleSerializer,
    SessionSerializer,
    UserSessionSerializer,
    UserSessionWriteSerializer,
)
from sessions.api.views import SESSION_LIST_PARAMETERS, session_rows
from sessions.filters import SessionFilterSet
from sessions.models import UserSession
from sessions.services import session_transition, user_session_create, user_session_update
from sessions.states import SessionStatus
from workers.models import CMLWorker


def _newest(queryset, session):
    return queryset.filter(lablet_session=session).order_by("-created_at").first()


@extend_schema_view(
    list=extend_schema(summary="List sessions (internal)", parameters=SESSION_LIST_PARAMETERS),
    retrieve=extend_schema(summary="One session (internal)"),
)
class InternalSessionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Sessions for controllers and tools."""

    queryset = session_rows()
    serializer_class = SessionSerializer
    filterset_class = SessionFilterSet
    authentication_classes = [InternalApiKeyAuthentication]
    permission_classes = [InternalApiKey]
    conflict_actions = ("schedule", "transition", "ready", "user_session", "grading_session")
    checks_roles = False

    def _session_response(self, session) -> Response:
        return Response(SessionSerializer(self.get_queryset().get(pk=session.pk)).data)

    @extend_schema(
        summary="Schedule a session onto a worker (internal)",
        description="PENDING → SCHEDULED; 409 when the worker is not RUNNING or lacks the capacity.",
        request=ScheduleSerializer,
        responses={200: SessionSerializer},
    )
    @action(detail=True, methods=["post"])
    def schedule(self, request, pk=None):
        session = self.get_object()
        data = self.read_body(ScheduleSerializer)
        worker = CMLWorker.objects.filter(pk=data["worker_id"]).first()
        if worker is None:
            raise ValidationError({"worker_id": [f"no worker with id {data['worker_id']}"]})
        session = session_transition(
            session,
            SessionStatus.SCHEDULED,
            actor=request.user,
            reason=data.get("reason", ""),
            expected_status=data.get("expected_status"),
            worker=worker,
        )
        return self._session_response(session)

    @extend_schema(
        summary="Move a session to any allowed status (internal)",
        request=InternalTransitionSerializer,
        responses={200: SessionSerializer},
    )
    @action(detail=True, methods=["post"])
    def transition(self, request, pk=None):
        session = self.get_object()
        data = self.read_body(InternalTransitionSerializer)
        params = {"end_reason": data["end_reason"]} if "end_reason" in data else {}
        session = session_transition(
            session,
            data["status"],
            actor=request.user,
            reason=data.get("reason", ""),
            expected_status=data.get("expected_status"),
            **params,
        )
        return self._session_response(session)

    @extend_schema(
        summary="Mark a session READY (internal)",
        description="INSTANTIATING → READY, creating the UserSession in the same transaction when one is given.",
        request=ReadySerializer,
        responses={200: SessionSerializer},
    )
    @action(detail=True, methods=["post"])
    def ready(self, request, pk=None):
        session = self.get_object()
        data = self.read_body(ReadySerializer)
        user_session = data.get("user_session")
        session = session_transition(
            session,
            SessionStatus.READY,
            actor=request.user,
            reason=data.get("reason", ""),
            expected_status=data.get("expected_status"),
            user_session=dict(user_session) if user_session is not None else None,
        )
        return self._session_response(session)

    @extend_schema(
        summary="Create or update the session's UserSession (internal)",
        description=(
            "Creates it (201) when the session has none; otherwise updates the current one (200), moving its "
            "`status` through its state machine (409 when refused)."
        ),
        request=UserSessionWriteSerializer,
        responses={200: UserSessionSerializer, 201: UserSessionSerializer},
    )
    @action(detail=True, methods=["post"], url_path="user-session")
    def user_session(self, request, pk=None):
        session = self.get_object()
        data = dict(self.read_body(UserSessionWriteSerializer))
        target, reason = data.pop("status", None), data.pop("reason", "")
        current = _newest(UserSession.objects.all(), session)
        if current is None:
            created = user_session_create(session, actor=request.user, reason=reason, **data, **_status(target))
            return Response(UserSessionSerializer(created).data, status=status.HTTP_201_CREATED)
        updated = user_session_update(current, actor=request.user, status=target, reason=reason, **data)
        return Response(UserSessionSerializer(updated).data)

    @extend_schema(
        summary="Create or update the session's GradingSession (internal)",
        description=(
            "Creates it (201) when the session has none; otherwise updates the current one (200). `status` moves "
            "forward only (or to FAULTED); a refused move is 409."
        ),
        request=GradingSessionWriteSerializer,
        responses={200: GradingSessionSerializer, 201: GradingSessionSerializer},
    )
    @action(detail=True, methods=["post"], url_path="grading-session")
    def grading_session(self, request, pk=None):
        session = self.get_object()
        data = dict(self.read_body(GradingSessionWriteSerializer))
        target, reason = data.pop("status", None), data.pop("reason", "")
        current = _newest(GradingSession.objects.all(), session)
        if current is None:
            with transaction.atomic():
                grading = grading_session_create(session, actor=request.user, reason=reason, **data)
                if target is not None:
                    grading = grading_session_update(grading, actor=request.user, status=target, reason=reason)
            return Response(GradingSessionSerializer(grading).data, status=status.HTTP_201_CREATED)
        grading = grading_session_update(current, actor=request.user, status=target, reason=reason, **data)
        return Response(GradingSessionSerializer(grading).data)

    @extend_schema(
        summary="Store the session's score report (internal)",
        description="Immutable; sets the session's `grade_result`. `passed` is score ≥ cut_score.",
        request=ScoreReportWriteSerializer,
        responses={201: ScoreReportSerializer},
    )
    @action(detail=True, methods=["post"], url_path="score-report")
    def score_report(self, request, pk=None):
        session = self.get_object()
        data = self.read_body(ScoreReportWriteSerializer)
        grading = self._grading_session_for(session, data.get("grading_session_id"))
        report = score_report_create(
            session,
            actor=request.user,
            score=data["score"],
            max_score=data["max_score"],
            cut_score=data["cut_score"],
            sections=[dict(section) for section in data.get("sections", [])],
            grading_session=grading,
            submitted_at=data.get("submitted_at"),
            manual=data.get("manual", False),
        )
        report = (
            ScoreReport.objects.select_related("lablet_session__definition")
            .prefetch_related("sections")
            .get(pk=report.pk)
        )
        location = reverse("api:session-score-report", kwargs={"pk": session.pk})
        return Response(
            ScoreReportSerializer(report).data, status=status.HTTP_201_CREATED, headers={"Location": location}
        )

    @staticmethod
    def _grading_session_for(session, grading_session_id):
        if grading_session_id is None:
            return _newest(GradingSession.objects.all(), session)
        grading = GradingSession.objects.filter(pk=grading_session_id, lablet_session=session).first()
        if grading is None:
            raise ValidationError({"grading_session_id": ["is not a grading session of this session"]})
        return grading


def _status(target) -> dict:
    return {"status": target} if target is not None else {}
