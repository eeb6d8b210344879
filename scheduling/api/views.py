"""REST for scheduling (SPEC §5.1, §10): the placement dry run and the capacity check."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema
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


class CapacityViewSet(ApiViewSet):
    """The capacity check (SPEC §10), for instructors and admins."""

    permission_classes = [IsInstructor]

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
