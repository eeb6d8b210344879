"""The internal API for controllers and tools (SPEC §5.1), under `/api/internal/`, behind `X-API-Key`.

Unlike the public API it may drive a session through any transition its state machine
allows (SCHEDULED onto a worker, READY with the UserSession, EXPIRED, …), and it writes the
UserSession (the grading children are written by `grading.api.sessions`). It calls the same services as
everything else, so the same rules and the same 409s apply.
"""

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.exceptions import ValidationError

from lcm.api.authentication import InternalApiKeyAuthentication
from lcm.api.permissions import InternalApiKey
from sessions.api.serializers import (
    InternalTransitionSerializer,
    ReadySerializer,
    ScheduleSerializer,
    UserSessionSerializer,
    UserSessionWriteSerializer,
)
from sessions.api.views import SESSION_LIST_PARAMETERS, BaseSessionViewSet, child_route, session_action
from sessions.models import UserSession
from sessions.services import user_session_create, user_session_update
from sessions.states import SessionStatus
from workers.models import CMLWorker


def _scheduled_worker(data) -> dict:
    """The worker a schedule body names (400 when there is none with that id)."""
    worker = CMLWorker.objects.filter(pk=data["worker_id"]).first()
    if worker is None:
        raise ValidationError({"worker_id": [f"no worker with id {data['worker_id']}"]})
    return {"worker": worker}


def _end_reason(data) -> dict:
    return {"end_reason": data["end_reason"]} if "end_reason" in data else {}


def _user_session(data) -> dict:
    """READY's UserSession, created in the same transaction when the body gives one."""
    user_session = data.get("user_session")
    return {"user_session": dict(user_session) if user_session is not None else None}


def _user_session_create(session, target, **fields):
    return user_session_create(session, **fields, **({"status": target} if target is not None else {}))


@extend_schema_view(
    list=extend_schema(summary="List sessions (internal)", parameters=SESSION_LIST_PARAMETERS),
    retrieve=extend_schema(summary="One session (internal)"),
)
class InternalSessionViewSet(BaseSessionViewSet):
    """Sessions for controllers and tools."""

    authentication_classes = [InternalApiKeyAuthentication]
    permission_classes = [InternalApiKey]
    conflict_actions = ("schedule", "transition", "ready", "user_session")
    checks_roles = False

    @session_action(
        "Schedule a session onto a worker (internal)",
        ScheduleSerializer,
        "PENDING → SCHEDULED; 409 when the worker is not RUNNING or lacks the capacity.",
    )
    def schedule(self, request, pk=None):
        return self._transition_from_body(ScheduleSerializer, SessionStatus.SCHEDULED, _scheduled_worker)

    @session_action(
        "Move a session to any allowed status (internal)",
        InternalTransitionSerializer,
    )
    def transition(self, request, pk=None):
        return self._transition_from_body(InternalTransitionSerializer, fields=_end_reason)

    @session_action(
        "Mark a session READY (internal)",
        ReadySerializer,
        "INSTANTIATING → READY, creating the UserSession in the same transaction when one is given.",
    )
    def ready(self, request, pk=None):
        return self._transition_from_body(ReadySerializer, SessionStatus.READY, _user_session)

    user_session = child_route(
        "user-session",
        summary="Create or update the session's UserSession (internal)",
        description=(
            "Creates it (201) when the session has none; otherwise updates the current one (200), moving its "
            "`status` through its state machine (409 when refused)."
        ),
        write=UserSessionWriteSerializer,
        read=UserSessionSerializer,
        children=UserSession.objects,
        create=_user_session_create,
        update=user_session_update,
    )
