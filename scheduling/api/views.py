"""REST for scheduling (SPEC §5.1, §10): the placement dry run and the capacity check."""

from datetime import UTC

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from lcm.api.permissions import IsInstructor
from lcm.api.viewsets import ApiViewSet
from scheduling.admission import capacity_check
from scheduling.api.serializers import (
    CapacityCheckSerializer,
    PreviewRequestSerializer,
    PreviewSerializer,
    VerdictSerializer,
)
from scheduling.capacity import Demand
from scheduling.forecast import ForecastError, forecast
from scheduling.selectors import placement_preview
from sessions.booking import _clean_timeslot, _definition_for_booking
from sessions.models import LabletDefinition


class SchedulingViewSet(ApiViewSet):
    """Scheduling tools for instructors and admins."""

    permission_classes = [IsInstructor]

    @extend_schema(
        summary="Placement preview",
        description="Where a session of this definition would go now: candidates with scores and each rejection.",
        request=PreviewRequestSerializer,
        responses={200: PreviewSerializer},
    )
    @action(detail=False, methods=["post"])
    def preview(self, request):
        data = self.read_body(PreviewRequestSerializer)
        definition = LabletDefinition.objects.filter(pk=data["definition_id"]).first()
        if definition is None:
            raise ValidationError({"definition_id": [f"no definition with id {data['definition_id']}"]})
        candidates = [c.as_dict() for c in placement_preview(definition)]
        chosen = candidates[0]["worker_id"] if candidates and candidates[0]["fits"] else None
        need = Demand.of(definition)  # what placement itself compares against each worker
        demand = {
            "cpu_cores": need.cpu_cores,
            "memory_gb": need.memory_gb,
            "storage_gb": need.storage_gb,
            "node_count": need.node_count,
            "ports": need.ports,
            "license_affinity": list(need.license_affinity),
        }
        body = {
            "definition_id": definition.pk,
            "timeslot_start": data.get("timeslot_start"),
            "demand": demand,
            "chosen_worker_id": chosen,
            "candidates": candidates,
        }
        return Response(PreviewSerializer(body).data)


def _query_datetime(params, name: str):
    text = params.get(name)
    if text in (None, ""):
        return None
    try:
        value = parse_datetime(text.strip())
    except ValueError:
        value = None
    if value is None:
        raise ValidationError({name: [f"{name} must be an ISO 8601 date and time, e.g. 2026-01-05T08:00:00Z"]})
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


class CapacityViewSet(ApiViewSet):
    """Capacity and cost (SPEC §10), for instructors and admins: the check and the forecast."""

    permission_classes = [IsInstructor]
    query_parameter_actions = ("forecast",)  # documents its 400

    @extend_schema(
        summary="Capacity check",
        description="Would `count` more sessions of this definition over this timeslot fit the fleet, with what is "
        "already booked (boot lead and teardown included)? `available` counts the autoscaler's room up to its "
        "per-region maximum when autoscaling is on. Booking a session or an exam applies the same check.",
        request=CapacityCheckSerializer,
        responses={200: VerdictSerializer},
    )
    @action(detail=False, methods=["post"])
    def check(self, request):
        data = self.read_body(CapacityCheckSerializer)
        errors: dict = {}
        now = timezone.now()
        definition = _definition_for_booking(data["definition_id"], errors)
        start, end = _clean_timeslot(definition, data.get("timeslot_start"), data.get("timeslot_end"), now, errors)
        if errors:
            raise DjangoValidationError(errors)
        verdict = capacity_check(definition, start, end, data["count"], now=now)
        return Response(VerdictSerializer(verdict.as_dict()).data)

    @extend_schema(
        summary="Capacity forecast",
        description=(
            "Booked demand against the fleet and the autoscaler's plan, bucket by bucket: `from`, `to` (ISO 8601, "
            "default now and 7 days on; at most 14 days) and `step` (minutes, 5–1440, default 60; at most 2,016 "
            "buckets). Each bucket: {start, demand: {cpu, memory_gb, storage_gb, nodes, licences}, capacity: {…}, "
            "planned: {launch: [...], drain: [...]}, cost_per_hour}."
        ),
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="Window start (default: now)."),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="Window end (default: from + 7 days)."),
            OpenApiParameter("step", OpenApiTypes.INT, description="Bucket length in minutes, 5–1440 (default 60)."),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=False, methods=["get"])
    def forecast(self, request):
        params = request.query_params
        start, end = _query_datetime(params, "from"), _query_datetime(params, "to")
        step = params.get("step")
        if step not in (None, ""):
            try:
                step = int(step)
            except ValueError:
                raise ValidationError({"step": ["step must be a whole number of minutes"]}) from None
        else:
            step = None
        try:
            body = forecast(start, end, step)
        except ForecastError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        return Response(body)
