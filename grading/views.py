"""Score report pages (SPEC §5.4): a filterable table with per-section detail, and its CSV export."""

import csv

from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone

from grading.filters import ScoreReportFilterSet
from grading.models import ScoreReport
from lcm.pages import clean_params, filter_errors, instructor_required, page_context, paginate, render_live
from sessions.models import LabletDefinition

CSV_COLUMNS = (
    "report_id", "session_id", "reservation_id", "owner", "definition", "definition_version", "score", "max_score",
    "cut_score", "percent", "result", "manual", "sections", "submitted_at", "created_at",
)  # fmt: skip


def _reports():
    return (
        ScoreReport.objects.select_related("lablet_session__definition")
        .prefetch_related("sections")
        .order_by("-created_at", "-id")
    )


def _filtered(request):
    params = clean_params(request.GET)
    filterset = ScoreReportFilterSet(params, queryset=_reports())
    return params, filterset


@instructor_required
def report_list(request):
    """Score reports filtered by definition, owner, result and date; each row opens its sections."""
    params, filterset = _filtered(request)
    page, query = paginate(filterset.qs, params)
    context = page_context(
        request,
        "reports",
        page=page,
        query=query,
        params=params,
        errors=filter_errors(filterset),
        definitions=LabletDefinition.objects.only("id", "name", "version").order_by("name", "-created_at"),
    )
    return render_live(request, "grading/report_list.html", context)


def _cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (owner names come from outside)."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_row(report) -> list[str]:
    session = report.lablet_session
    percent = f"{report.score / report.max_score * 100:.1f}" if report.max_score else ""
    sections = "; ".join(f"{s.name}={s.score}/{s.max_score}" for s in report.sections.all())
    return [
        _cell(v)
        for v in (
            report.pk,
            session.pk,
            session.reservation_id or "",
            session.owner,
            session.definition.name,
            session.definition_version,
            report.score,
            report.max_score,
            report.cut_score,
            percent,
            "PASS" if report.passed else "FAIL",
            "yes" if report.manual else "no",
            sections,
            report.submitted_at.isoformat() if report.submitted_at else "",
            report.created_at.isoformat(),
        )  # fmt: skip
    ]


class _Echo:
    def write(self, value):
        return value


@instructor_required
def report_export(request):
    """The filtered reports as CSV, one row per report (sections joined in one column)."""
    _params, filterset = _filtered(request)
    if filterset.errors:
        problems = "; ".join(f"{k}: {v}" for k, v in filter_errors(filterset).items())
        return HttpResponse(f"Bad filter: {problems}\n", status=400, content_type="text/plain; charset=utf-8")
    writer = csv.writer(_Echo())
    rows = filterset.qs.iterator(chunk_size=1000)

    def lines():
        yield writer.writerow(CSV_COLUMNS)
        for report in rows:
            yield writer.writerow(_csv_row(report))

    filename = f"score-reports-{timezone.now():%Y%m%d-%H%M%S}.csv"
    return StreamingHttpResponse(
        lines(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )
