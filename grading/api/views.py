"""REST for score reports (SPEC §5.1): a filterable list, as JSON pages or as one CSV export."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.renderers import BaseRenderer, JSONRenderer

from grading.api.serializers import ScoreReportSerializer
from grading.export import score_reports_csv_response
from grading.filters import ScoreReportFilterSet
from grading.models import ScoreReport
from lcm.api.permissions import IsInstructor
from lcm.api.viewsets import ApiViewSet


class CSVRenderer(BaseRenderer):
    """Selects `?format=csv`; the view streams the file itself and errors are JSON, so this renders nothing."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return b""


class ScoreReportViewSet(mixins.ListModelMixin, ApiViewSet):
    """Score reports, newest first (instructors and admins)."""

    queryset = ScoreReport.objects.select_related("lablet_session__definition").prefetch_related("sections")
    serializer_class = ScoreReportSerializer
    filterset_class = ScoreReportFilterSet
    permission_classes = [IsInstructor]
    renderer_classes = [JSONRenderer, CSVRenderer]

    def handle_exception(self, exc):
        # Errors keep the JSON contract even when the CSV export was asked for.
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response

    @extend_schema(
        summary="List score reports",
        description="`?format=csv` exports every matching report (no pagination) as `text/csv`.",
        parameters=[
            OpenApiParameter("owner", OpenApiTypes.STR, description="The candidate's id (exact)."),
            OpenApiParameter("definition", OpenApiTypes.UUID, description="Definition id."),
            OpenApiParameter("passed", OpenApiTypes.BOOL),
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="Reports created at or after this instant."),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="Reports created before this instant."),
            OpenApiParameter("from_", exclude=True),
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"], description="Default json."),
        ],
        responses={(200, "application/json"): ScoreReportSerializer(many=True), (200, "text/csv"): OpenApiTypes.STR},
    )
    def list(self, request, *args, **kwargs):
        if request.accepted_renderer.format == "csv":
            return score_reports_csv_response(self.filter_queryset(self.get_queryset()))
        return super().list(request, *args, **kwargs)
