"""REST for score reports (SPEC §5.1): a filterable list, as JSON pages or as one CSV export."""

import csv

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.renderers import BaseRenderer, JSONRenderer

from grading.api.serializers import ScoreReportSerializer
from grading.filters import ScoreReportFilterSet
from grading.models import ScoreReport
from lcm.api.permissions import IsInstructor
from lcm.api.viewsets import ApiViewSet

CSV_COLUMNS = [
    "id", "session_id", "owner", "definition_id", "definition_name", "definition_version", "score", "max_score",
    "cut_score", "passed", "manual", "submitted_at", "created_at", "sections",
]  # fmt: skip
# Rows fetched per database round trip while the CSV streams.
CSV_CHUNK = 2000


class CSVRenderer(BaseRenderer):
    """Selects `?format=csv`; the view streams the file itself and errors are JSON, so this renders nothing."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return b""


class _Echo:
    """A file-like object whose `write` returns what it is given (csv.writer into a stream)."""

    def write(self, value):
        return value


def _csv_cell(value) -> str:
    # A leading =, +, - or @ makes spreadsheets evaluate the cell: quote it as text.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _csv_rows(queryset):
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for report in queryset.iterator(chunk_size=CSV_CHUNK):
        session = report.lablet_session
        sections = "; ".join(f"{s.name}={s.score}/{s.max_score}" for s in report.sections.all())
        row = [
            report.pk, session.pk, session.owner, session.definition_id, session.definition.name,
            session.definition_version, report.score, report.max_score, report.cut_score,
            "PASS" if report.passed else "FAIL", report.manual,
            report.submitted_at.isoformat() if report.submitted_at else "", report.created_at.isoformat(), sections,
        ]  # fmt: skip
        yield writer.writerow([_csv_cell(value) for value in row])


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
            rows = self.filter_queryset(self.get_queryset())
            response = StreamingHttpResponse(_csv_rows(rows), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = 'attachment; filename="score-reports.csv"'
            return response
        return super().list(request, *args, **kwargs)
