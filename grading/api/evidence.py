"""A session's evidence and re-grade in the REST API (SPEC §9), on the `sessions` prefix beside the sessions app's
ViewSets (grading depends on sessions, never the reverse): list, download (the object's bytes, whose SHA-256 is
the row's), and `POST .../regrade` (409 naming why on a session that is not ARCHIVED or has no lab YAML)."""

import hashlib

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from grading.api.serializers import EvidenceItemSerializer, RegradeSerializer
from grading.models import EvidenceItem
from grading.services import regrade_request
from grading.storage import evidence_store
from lcm import http
from lcm.api.permissions import IsInstructor
from lcm.api.viewsets import ApiViewSet
from sessions.models import LabletSession

UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class SessionEvidenceViewSet(ApiViewSet):
    """A session's evidence items and its re-grade (instructors and admins)."""

    queryset = LabletSession.objects.all()
    permission_classes = [IsInstructor]
    conflict_actions = ("regrade",)

    @extend_schema(summary="The session's evidence items (SPEC §9)", responses={200: EvidenceItemSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="evidence/")
    def evidence(self, request, pk=None):
        session = self.get_object()
        items = EvidenceItem.objects.filter(lablet_session=session).order_by("kind", "name", "pk")
        return self.paginated_response(items, EvidenceItemSerializer)

    @extend_schema(
        summary="One evidence item's bytes (its SHA-256 is the item's `sha256`)",
        responses={200: OpenApiResponse(OpenApiTypes.BINARY), 404: OpenApiResponse(description="no such item")},
    )
    @action(detail=True, methods=["get"], url_path=rf"evidence/(?P<item_id>{UUID})/")
    def evidence_item(self, request, pk=None, item_id=None):
        session = self.get_object()
        item = EvidenceItem.objects.filter(lablet_session=session, pk=item_id).first()
        if item is None:
            raise NotFound("No such evidence item.")
        if item.expired_at is not None:
            raise NotFound("This evidence item expired; its object was deleted.")
        try:
            data = evidence_store().get(item.object_key)
        except http.NotFound:
            raise NotFound("The evidence object is missing from the store.") from None
        response = HttpResponse(data, content_type=item.content_type)
        filename = item.object_key.rsplit("/", 1)[-1]
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Content-SHA256"] = hashlib.sha256(data).hexdigest()
        return response

    @extend_schema(
        summary="Re-grade an ARCHIVED session from its evidence lab (SPEC §9)",
        description="202 with the re-grade (a re-grade already under way is returned with 200). 409 naming why: "
        "the session is not ARCHIVED, or its evidence has no lab YAML.",
        request=None,
        responses={202: RegradeSerializer, 200: RegradeSerializer},
    )
    @action(detail=True, methods=["post"], url_path="regrade")
    def regrade(self, request, pk=None):
        regrade, created = regrade_request(self.get_object(), actor=request.user)
        code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        return Response(RegradeSerializer(regrade).data, status=code)
