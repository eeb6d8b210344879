"""The one CSV export of score reports, used by the reports page and by `/api/v1/score-reports/?format=csv`.

One row per report, its sections joined in one column. Every cell is defused against spreadsheet
formula injection: owner names and section names come from outside, and a cell a spreadsheet
reads as a formula could run it when an instructor opens the file.
"""

import csv

from django.http import StreamingHttpResponse
from django.utils import timezone

CSV_COLUMNS = (
    "report_id", "session_id", "reservation_id", "owner", "definition_id", "definition_name", "definition_version",
    "score", "max_score", "cut_score", "percent", "result", "manual", "sections", "submitted_at", "created_at",
)  # fmt: skip
# A cell starting with one of these is a formula (or can smuggle one past the first character) in
# Excel, LibreOffice and Google Sheets; a leading quote makes it text.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Rows fetched per database round trip while the CSV streams (sections are prefetched per chunk).
CSV_CHUNK = 2000


def csv_cell(value) -> str:
    """`value` as text a spreadsheet will not evaluate."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text


def report_row(report) -> list[str]:
    """The CSV cells of one report, in `CSV_COLUMNS` order (needs `lablet_session__definition` and `sections`)."""
    session = report.lablet_session
    percent = f"{report.score / report.max_score * 100:.1f}" if report.max_score else ""
    sections = "; ".join(f"{s.name}={s.score}/{s.max_score}" for s in report.sections.all())
    return [
        csv_cell(v)
        for v in (
            report.pk,
            session.pk,
            session.reservation_id or "",
            session.owner,
            session.definition_id,
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
    """A file-like object whose `write` returns what it is given (csv.writer into a stream)."""

    def write(self, value):
        return value


def csv_lines(reports):
    """The header, then one encoded CSV line per report of the queryset `reports`."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    rows = reports.select_related("lablet_session__definition").prefetch_related("sections")
    for report in rows.iterator(chunk_size=CSV_CHUNK):
        yield writer.writerow(report_row(report))


def score_reports_csv_response(reports) -> StreamingHttpResponse:
    """`reports` streamed as a CSV download named after the moment it was taken."""
    filename = f"score-reports-{timezone.now():%Y%m%d-%H%M%S}.csv"
    return StreamingHttpResponse(
        csv_lines(reports),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )
