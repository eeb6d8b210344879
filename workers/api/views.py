"""REST for the fleet (SPEC §5.1): workers (admin actions set intents the worker reconciler carries out),
worker templates and lab records. Reading needs the instructor role; every change, admin."""

import uuid

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from lcm.api.permissions import IsAdmin, IsInstructor
from lcm.api.serializers import REASON_PARAMETER, ReasonSerializer
from lcm.api.viewsets import ApiViewSet
from scheduling.selectors import worker_capacities
from workers.api.serializers import (
    LabRecordSerializer,
    LicenseSerializer,
    WorkerCreateSerializer,
    WorkerSerializer,
    WorkerTemplateSerializer,
)
from workers.filters import LabRecordFilterSet, WorkerFilterSet
from workers.models import CMLWorker, LabRecord, WorkerTemplate
from workers.services import (
    worker_cancel_drain,
    worker_create,
    worker_drain,
    worker_license_deregister,
    worker_license_register,
    worker_request_desired,
)
from workers.states import DesiredStatus, WorkerStatus

STATUS_LIST_PARAMETER = OpenApiParameter(
    "status", OpenApiTypes.STR, description="Comma-separated statuses, any case (e.g. `RUNNING,draining`)."
)

# Fields a registered endpoint or a template-made worker may set besides name and template.
_WORKER_FIELDS = (
    "cml_base_url", "cml_version", "license_type", "region", "aws_instance_id", "instance_type", "public_ip",
    "private_ip", "cpu_cores", "memory_gb", "storage_gb", "max_nodes", "port_range_start", "port_range_end",
)  # fmt: skip


def _action_doc(summary: str, description: str, request=ReasonSerializer):
    return extend_schema(summary=summary, description=description, request=request, responses={200: WorkerSerializer})


@extend_schema_view(
    list=extend_schema(summary="List workers", parameters=[STATUS_LIST_PARAMETER]),
    retrieve=extend_schema(summary="One worker"),
)
class WorkerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """CML workers with their derived capacity usage."""

    queryset = CMLWorker.objects.select_related("template")
    serializer_class = WorkerSerializer
    filterset_class = WorkerFilterSet
    conflict_actions = ("start", "stop", "drain", "cancel_drain", "license", "license_deregister")
    query_parameter_actions = ("destroy", "license_deregister")

    def get_permissions(self):
        if self.action in ("list", "retrieve"):
            return [IsInstructor()]
        return [IsAdmin()]

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        capacities = worker_capacities([worker.pk for worker in page])
        data = WorkerSerializer(page, many=True, context={**self.get_serializer_context(), "capacities": capacities})
        return self.get_paginated_response(data.data)

    def _worker_response(self, worker, code=status.HTTP_200_OK, headers=None) -> Response:
        fresh = self.get_queryset().get(pk=worker.pk)
        context = {**self.get_serializer_context(), "capacities": worker_capacities([fresh.pk])}
        return Response(WorkerSerializer(fresh, context=context).data, status=code, headers=headers)

    def retrieve(self, request, *args, **kwargs):
        return self._worker_response(self.get_object())

    @extend_schema(summary="Add a worker (admin)", request=WorkerCreateSerializer, responses={201: WorkerSerializer})
    def create(self, request):
        """From a template (`{"template": "<name or id>", "name"?}`: capacity copied from it; the reconciler
        launches the EC2 instance), or by registering an existing CML endpoint (`cml_base_url`, `name`,
        capacity; `status` defaults to RUNNING)."""
        data = self.read_body(WorkerCreateSerializer)
        template = data.get("template")
        fields = {key: data[key] for key in _WORKER_FIELDS if key in data}
        default_status = WorkerStatus.PENDING if template else WorkerStatus.RUNNING
        name = data.get("name") or f"{template.name}-{uuid.uuid4().hex[:8]}"
        worker = worker_create(
            name=name,
            actor=request.user,
            template=template,
            status=data.get("status", default_status),
            reason=data.get("reason", ""),
            **fields,
        )
        location = reverse("api:worker-detail", kwargs={"pk": worker.pk})
        return self._worker_response(worker, status.HTTP_201_CREATED, {"Location": location})

    @extend_schema(
        summary="Terminate a worker (admin)",
        description="Sets `desired_status` TERMINATED (idempotent); the reconciler terminates it.",
        parameters=[REASON_PARAMETER],
        responses={200: WorkerSerializer},
    )
    def destroy(self, request, pk=None):
        worker = self.get_object()
        reason = self.request_reason()
        worker = worker_request_desired(worker, DesiredStatus.TERMINATED, actor=request.user, reason=reason)
        return self._worker_response(worker)

    def _desired(self, desired):
        worker = self.get_object()
        reason = self.read_body(ReasonSerializer).get("reason", "")
        worker = worker_request_desired(worker, desired, actor=self.request.user, reason=reason)
        return self._worker_response(worker)

    @_action_doc("Start a worker (admin)", "Sets `desired_status` RUNNING. 409 once it is terminating or terminated.")
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._desired(DesiredStatus.RUNNING)

    @_action_doc("Stop a worker (admin)", "Sets `desired_status` STOPPED. 409 once it is terminating or terminated.")
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._desired(DesiredStatus.STOPPED)

    @_action_doc("Drain a worker (admin)", "RUNNING → DRAINING: no new sessions; 409 from any other status.")
    @action(detail=True, methods=["post"])
    def drain(self, request, pk=None):
        worker = self.get_object()
        reason = self.read_body(ReasonSerializer).get("reason", "")
        return self._worker_response(worker_drain(worker, actor=request.user, reason=reason))

    @_action_doc("Cancel a drain (admin)", "DRAINING → RUNNING; 409 when the worker is not draining.")
    @action(detail=True, methods=["post"], url_path="cancel-drain")
    def cancel_drain(self, request, pk=None):
        worker = self.get_object()
        reason = self.read_body(ReasonSerializer).get("reason", "")
        return self._worker_response(worker_cancel_drain(worker, actor=request.user, reason=reason))

    @_action_doc(
        "Register the worker's CML licence (admin)",
        "An async intent: `license_status` becomes REGISTERING and the worker reconciler registers the token "
        "with CML (the token is kept only until CML accepts it, never shown or logged). "
        "409 unless the licence is UNREGISTERED or FAILED.",
        request=LicenseSerializer,
    )
    @action(detail=True, methods=["post"])
    def license(self, request, pk=None):
        worker = self.get_object()
        data = self.read_body(LicenseSerializer)
        worker = worker_license_register(worker, data["token"], actor=request.user, reason=data.get("reason", ""))
        return self._worker_response(worker)

    @extend_schema(
        summary="Deregister the worker's CML licence (admin)",
        description="An async intent: `license_status` becomes DEREGISTERING. 409 unless it is REGISTERED or FAILED.",
        parameters=[REASON_PARAMETER],
        responses={200: WorkerSerializer},
    )
    @license.mapping.delete
    def license_deregister(self, request, pk=None):
        worker = self.get_object()
        reason = self.request_reason()
        worker = worker_license_deregister(worker, actor=request.user, reason=reason)
        return self._worker_response(worker)


@extend_schema_view(list=extend_schema(summary="List worker templates"))
class WorkerTemplateViewSet(mixins.ListModelMixin, ApiViewSet):
    """Worker templates (seeded from YAML; read-only here)."""

    queryset = WorkerTemplate.objects.all()
    serializer_class = WorkerTemplateSerializer
    permission_classes = [IsInstructor]


@extend_schema_view(list=extend_schema(summary="List lab records", parameters=[STATUS_LIST_PARAMETER]))
class LabRecordViewSet(mixins.ListModelMixin, ApiViewSet):
    """CML labs on the workers, with their ports (written by the reconcilers; read-only here)."""

    queryset = LabRecord.objects.select_related("worker").prefetch_related("port_allocations")
    serializer_class = LabRecordSerializer
    filterset_class = LabRecordFilterSet
    permission_classes = [IsInstructor]
