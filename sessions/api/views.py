"""REST for definitions and sessions (SPEC §5.1): thin ViewSets over `sessions.services`.

Instructors book, watch and drive sessions and read definitions; only admins write
definitions. Every change goes through the same service as the pages and commands.
"""

from django.core.exceptions import ValidationError
from django.db import DataError, transaction
from django.db.models import OuterRef, Subquery
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from lcm import loops
from lcm.api.permissions import IsAdmin, IsInstructor
from lcm.api.serializers import REASON_PARAMETER, ReasonSerializer
from lcm.api.viewsets import ApiViewSet
from lcm.roles import is_admin
from scheduling.api.serializers import VerdictSerializer
from sessions.api.serializers import (
    DefinitionDetailSerializer,
    DefinitionPatchSerializer,
    DefinitionSerializer,
    DefinitionWriteSerializer,
    HistorySerializer,
    SessionCreateSerializer,
    SessionExtendSerializer,
    SessionRequeueSerializer,
    SessionSerializer,
    SessionTransitionSerializer,
    UserSessionSerializer,
)
from sessions.booking import session_create, session_extend
from sessions.definitions import definition_create, definition_new_version, definition_transition
from sessions.filters import DefinitionFilterSet, SessionFilterSet
from sessions.models import LabletDefinition, LabletSession, SessionStatusChange, UserSession
from sessions.services import session_reinstantiate, session_requeue, session_terminate, session_transition
from sessions.states import DefinitionStatus
from workers.models import CMLWorker


class SessionCreatedSerializer(SessionSerializer):
    """A booked session, with the capacity verdict it was admitted with (null when admission is off)."""

    capacity = VerdictSerializer(read_only=True, allow_null=True, help_text="The capacity check (SPEC §10).")

    class Meta(SessionSerializer.Meta):
        fields = [*SessionSerializer.Meta.fields, "capacity"]


STATUS_LIST_PARAMETER = OpenApiParameter(
    "status", OpenApiTypes.STR, description="Comma-separated statuses, any case (e.g. `RUNNING,ready`)."
)
SESSION_LIST_PARAMETERS = [
    STATUS_LIST_PARAMETER,
    OpenApiParameter("owner", OpenApiTypes.STR, description="The candidate's id (exact)."),
    OpenApiParameter("definition", OpenApiTypes.UUID, description="Definition id."),
    OpenApiParameter("worker", OpenApiTypes.UUID, description="Worker id."),
    OpenApiParameter("reservation_id", OpenApiTypes.STR, description="External reservation id (exact)."),
    OpenApiParameter("from", OpenApiTypes.DATETIME, description="Timeslots ending after this instant."),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="Timeslots starting before this instant."),
    OpenApiParameter("from_", exclude=True),
]

# Service errors that name an input by its model name, renamed to the API's.
_DEFINITION_ERROR_FIELDS = {
    "cpu_cores": "resource_requirements.cpu_cores",
    "memory_gb": "resource_requirements.memory_gb",
    "storage_gb": "resource_requirements.storage_gb",
}


def _renamed(exc: ValidationError, names: dict[str, str]) -> ValidationError:
    if not hasattr(exc, "error_dict"):
        return exc
    return ValidationError({names.get(key, key): messages for key, messages in exc.message_dict.items()})


def _definition_content(data: dict) -> dict:
    """Body fields as the definition services name them (`resource_requirements` → `cpu_cores` …)."""
    content = {k: v for k, v in data.items() if k not in ("status", "reason", "resource_requirements")}
    content.update(data.get("resource_requirements") or {})
    return content


@extend_schema_view(
    list=extend_schema(summary="List definitions", parameters=[STATUS_LIST_PARAMETER]),
    retrieve=extend_schema(summary="One definition, with its topology text"),
)
class DefinitionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Lablet definitions: versioned lab templates. Reading needs the instructor role; writing, admin."""

    queryset = LabletDefinition.objects.all()
    filterset_class = DefinitionFilterSet
    conflict_actions = ("partial_update", "destroy")

    def get_permissions(self):
        if self.action in ("list", "retrieve"):
            return [IsInstructor()]
        return [IsAdmin()]

    def get_queryset(self):
        rows = super().get_queryset()
        # Lists leave out the topology text, which can be large.
        return rows.defer("lab_yaml") if self.action == "list" else rows

    def get_serializer_class(self):
        return DefinitionSerializer if self.action == "list" else DefinitionDetailSerializer

    def _created(self, definition) -> Response:
        location = reverse("api:definition-detail", kwargs={"pk": definition.pk})
        return Response(
            DefinitionDetailSerializer(definition).data, status=status.HTTP_201_CREATED, headers={"Location": location}
        )

    @staticmethod
    def _write(call):
        """Run a definition write; a topology that is too deep to parse or holds values PostgreSQL cannot store
        (NUL characters in JSON) is a 400 on `lab_yaml`, not a 500."""
        try:
            return call()
        except ValidationError as exc:
            raise _renamed(exc, _DEFINITION_ERROR_FIELDS) from None
        except RecursionError:
            raise ValidationError({"lab_yaml": ["is nested too deeply to parse"]}) from None
        except (DataError, UnicodeEncodeError):
            raise ValidationError({"lab_yaml": ["contains values that cannot be stored"]}) from None

    @extend_schema(
        summary="Create a definition (admin)",
        request=DefinitionWriteSerializer,
        responses={201: DefinitionDetailSerializer},
    )
    def create(self, request):
        data = self.read_body(DefinitionWriteSerializer)
        status_ = data.get("status", DefinitionStatus.ACTIVE)
        definition = self._write(
            lambda: definition_create(actor=request.user, status=status_, **_definition_content(data))
        )
        return self._created(definition)

    @extend_schema(
        summary="Change a definition (admin)",
        description=(
            "A change of content (anything but `status`) publishes a **new version** (published versions are "
            "immutable) and answers 201 with it; `version` names it (default: next minor). `status` alone changes "
            "this version's status (ACTIVE/INACTIVE/DEPRECATED/ARCHIVED) and answers 200; with content, it is "
            "applied to the new version."
        ),
        request=DefinitionPatchSerializer,
        responses={200: DefinitionDetailSerializer, 201: DefinitionDetailSerializer},
    )
    def partial_update(self, request, pk=None):
        definition = self.get_object()
        data = self.read_body(DefinitionPatchSerializer)
        content = _definition_content(data)
        if content.get("name") == definition.name:
            del content["name"]  # naming the definition it already is changes nothing
        target, reason = data.get("status"), data.get("reason", "")
        if content:
            version = content.pop("version", None)
            created = self._write(
                lambda: definition_new_version(definition, actor=request.user, version=version, **content)
            )
            if target and target != created.status:
                created = definition_transition(created, target, actor=request.user, reason=reason)
            return self._created(created)
        if target and target != definition.status:
            definition = definition_transition(definition, target, actor=request.user, reason=reason)
        return Response(DefinitionDetailSerializer(definition).data)

    @extend_schema(
        summary="Archive a definition (admin)",
        description="Definitions are never deleted (sessions keep pointing at them): DELETE archives this version.",
        request=None,
        responses={200: DefinitionDetailSerializer},
    )
    def destroy(self, request, pk=None):
        definition = definition_transition(
            self.get_object(), DefinitionStatus.ARCHIVED, actor=request.user, reason="archived through the API"
        )
        return Response(DefinitionDetailSerializer(definition).data)


def session_rows():
    """Sessions with the names their representation shows (`definition_name`, `worker_name`).

    The names are correlated subqueries rather than joins or `select_related` objects: the
    count and the page-id query (see `lcm.api.pagination.page_queryset`) drop them and run on
    the bare table, only the rows of the page look their names up, and a page of 50 builds
    50 model instances instead of about 150.
    """
    return LabletSession.objects.annotate(
        definition_name=Subquery(
            LabletDefinition.objects.filter(pk=OuterRef("definition_id")).order_by().values("name")
        ),
        worker_name=Subquery(CMLWorker.objects.filter(pk=OuterRef("worker_id")).order_by().values("name")),
    )


@extend_schema_view(
    list=extend_schema(summary="List sessions", parameters=SESSION_LIST_PARAMETERS),
    retrieve=extend_schema(summary="One session"),
)
class BaseSessionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """What the public and the internal session ViewSets share: the rows, answering with the session as it is
    now, and moving it as a request body asks."""

    queryset = session_rows()
    serializer_class = SessionSerializer
    filterset_class = SessionFilterSet

    def _session_response(self, session, code=status.HTTP_200_OK, headers=None) -> Response:
        fresh = self.get_queryset().get(pk=session.pk)
        return Response(SessionSerializer(fresh).data, status=code, headers=headers)

    def _change_from_body(self, serializer_class, service, fields=None) -> Response:
        """Find this session, then read the body (404 before 400); run `service(session, actor=the caller,
        reason=the body's reason, **fields(body))` and answer the session."""
        session = self.get_object()
        data = self.read_body(serializer_class)
        extra = fields(data) if fields else {}
        session = service(session, actor=self.request.user, reason=data.get("reason", ""), **extra)
        return self._session_response(session)

    def _transition_from_body(self, serializer_class, target=None, fields=None) -> Response:
        """Move this session to `target` (else the body's `status`) under the body's `expected_status`, with
        the service arguments `fields(body)` adds."""

        def arguments(data) -> dict:
            target_status = data["status"] if target is None else target
            extra = fields(data) if fields else {}
            return {"target": target_status, "expected_status": data.get("expected_status"), **extra}

        return self._change_from_body(serializer_class, session_transition, arguments)


def newest_child(queryset, session):
    """The session's current child in `queryset` (its newest), or None."""
    return queryset.filter(lablet_session=session).order_by("-created_at").first()


def current_child(view, queryset):
    """The current child of the view's session (404 while it has none)."""
    session = view.get_object()
    child = newest_child(queryset, session)
    if child is None:
        raise NotFound(f"Session {session.pk} has none yet.")
    return child


def child_route(url_path: str, *, summary: str, description: str, write, read, children, create, update):
    """The internal API's POST route that writes a session's current child (its UserSession, its GradingSession).

    The body (`write` serializer) creates the child with `create(session, target, actor=, reason=,
    **fields)` (201) when the session has none, else moves it with `update(child, actor=, status=,
    reason=, **fields)` (200); `status` (the target) and `reason` are taken apart from the fields.
    `children` is the child model's queryset; `read` serializes the answer.
    """

    def route(self, request, pk=None):
        session = self.get_object()
        data = dict(self.read_body(write))
        target, reason = data.pop("status", None), data.pop("reason", "")
        current = newest_child(children.all(), session)
        if current is None:
            created = create(session, target, actor=request.user, reason=reason, **data)
            return Response(read(created).data, status=status.HTTP_201_CREATED)
        updated = update(current, actor=request.user, status=target, reason=reason, **data)
        return Response(read(updated).data)

    route.__name__ = url_path.replace("-", "_")
    route = action(detail=True, methods=["post"], url_path=url_path)(route)
    schema = extend_schema(summary=summary, description=description, request=write, responses={200: read, 201: read})
    return schema(route)


def session_action(summary: str, request, description: str | None = None):
    """A POST action on one session that answers the session: its OpenAPI summary, description and body."""

    def decorate(method):
        route = action(detail=True, methods=["post"])(method)
        return extend_schema(
            summary=summary, description=description, request=request, responses={200: SessionSerializer}
        )(route)

    return decorate


class SessionViewSet(BaseSessionViewSet):
    """Lablet sessions: book, watch, drive, terminate (instructors and admins)."""

    permission_classes = [IsInstructor]
    conflict_actions = ("create", "destroy", "transition", "extend", "requeue", "reinstantiate")
    query_parameter_actions = ("destroy",)

    @extend_schema(summary="Book a session", request=SessionCreateSerializer, responses={201: SessionCreatedSerializer})
    def create(self, request):
        """The definition must be ACTIVE; no `timeslot_start` means as soon as possible, no `timeslot_end`
        means start + the definition's `max_duration_minutes`. A `reservation_id` booked before answers 409
        with `existing_id`, so an upstream retry is idempotent."""
        data = self.read_body(SessionCreateSerializer)
        session = session_create(
            definition=data["definition_id"],
            owner=data["owner"],
            actor=request.user,
            timeslot_start=data.get("timeslot_start"),
            timeslot_end=data.get("timeslot_end"),
            reservation_id=data.get("reservation_id"),
            reason=data.get("reason", ""),
            on_capacity=data.get("on_capacity"),
        )
        location = reverse("api:session-detail", kwargs={"pk": session.pk})
        verdict = session.capacity_verdict
        body = SessionSerializer(self.get_queryset().get(pk=session.pk)).data | {
            "capacity": VerdictSerializer(verdict.as_dict()).data if verdict else None
        }
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})

    @extend_schema(
        summary="Terminate a session",
        description="From any non-terminal state; teardown of what it holds follows. Answers the session.",
        parameters=[REASON_PARAMETER],
        request=ReasonSerializer,
        responses={200: SessionSerializer},
    )
    def destroy(self, request, pk=None):
        session = self.get_object()
        session = session_terminate(session, actor=request.user, reason=self.request_reason())
        return self._session_response(session)

    @session_action(
        "Move a session to a manual target",
        SessionTransitionSerializer,
        "Manual targets: RUNNING, COLLECTING, GRADING, STOPPING, ARCHIVED. A move the state machine refuses "
        "(or one whose `expected_status` no longer holds) answers 409 with `current_status` and `allowed`.",
    )
    def transition(self, request, pk=None):
        return self._transition_from_body(SessionTransitionSerializer)

    @session_action(
        "Extend a session's timeslot",
        SessionExtendSerializer,
        "The new end must be later; the total stays within the definition's maximum unless an admin asks.",
    )
    def extend(self, request, pk=None):
        admin = is_admin(request.user)
        return self._change_from_body(
            SessionExtendSerializer, session_extend, lambda data: {"new_end": data["timeslot_end"], "is_admin": admin}
        )

    @session_action(
        "Requeue a session",
        SessionRequeueSerializer,
        "SCHEDULED → PENDING (placement again at the next placement tick); other active sessions are retried now. "
        "`exclude_worker: true` keeps a SCHEDULED session off the worker it leaves. 409 when terminal.",
    )
    def requeue(self, request, pk=None):
        return self._change_from_body(
            SessionRequeueSerializer, session_requeue, lambda data: {"exclude_worker": data["exclude_worker"]}
        )

    @session_action(
        "Re-instantiate a degraded session",
        ReasonSerializer,
        "A READY/RUNNING session whose lab is gone or stopped in CML (`degraded_at` set) gets a fresh lab on the same "
        "worker with the same ports; the reconciler brings it up and clears `degraded_at`. 409 when not degraded.",
    )
    def reinstantiate(self, request, pk=None):
        response = self._change_from_body(ReasonSerializer, session_reinstantiate)
        # A change of no status: nothing is projected that would wake the reconciler, so it is asked directly.
        transaction.on_commit(lambda: loops.enqueue("lablets", pk))
        return response

    def _child(self, queryset):
        return current_child(self, queryset)

    @extend_schema(summary="The session's UserSession (404 until it exists)", responses={200: UserSessionSerializer})
    @action(detail=True, methods=["get"], url_path="user-session")
    def user_session(self, request, pk=None):
        return Response(UserSessionSerializer(self._child(UserSession.objects.all())).data)

    @extend_schema(
        summary="The session's status timeline",
        description="Oldest first; child entities (user and grading session) are listed with their `entity`.",
        responses={200: HistorySerializer(many=True)},
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def history(self, request, pk=None):
        session = self.get_object()
        return self.paginated_response(SessionStatusChange.objects.filter(session=session), HistorySerializer)
