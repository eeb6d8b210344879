"""Score report pages (SPEC §5.4): a filterable table with per-section detail, and its CSV export."""

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.utils.functional import SimpleLazyObject
from django.views.decorators.http import require_POST

from grading.export import score_reports_csv_response
from grading.filters import FailedGradingFilterSet, ReportListOptions, ScoreReportFilterSet, failed_gradings
from grading.models import ScoreReport
from grading.services import regrade_request
from grading.statistics import class_statistics
from lcm.fsm import InvalidTransition
from lcm.pages import clean_params, filter_errors, instructor_required, list_page, live_page, page_context, render_live
from sessions.models import LabletDefinition, LabletSession

# The failures listed under the reports (the newest; narrow the filters for older ones).
FAILED_SHOWN = 100


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
@live_page()
def report_list(request):
    """Score reports filtered by definition, owner, result and date; each row opens its sections. Below them,
    the sessions whose grading failed (no score), filtered alike; `show=failed` shows only those."""
    params, filterset = _filtered(request)
    only_failed = params.get("show") == "failed"
    listing = list_page(params, filterset, ReportListOptions(params))
    failed = FailedGradingFilterSet(params, queryset=failed_gradings())
    failures = list(failed.qs[:FAILED_SHOWN]) if not failed.errors and params.get("passed") in (None, "") else []
    context = page_context(
        request,
        "reports",
        **listing,
        only_failed=only_failed,
        failures=failures,
        failures_more=len(failures) == FAILED_SHOWN,
        definitions=LabletDefinition.objects.only("id", "name", "version", "status").order_by("name", "-created_at"),
        # Drawn once per page load, outside the polled fragment: read only then (every report the filters match).
        stats=SimpleLazyObject(lambda: class_statistics(filterset.qs if not filterset.errors else _reports().none())),
    )
    return render_live(request, "grading/report_list.html", context)


@instructor_required
def report_export(request):
    """The filtered reports as CSV, one row per report (sections joined in one column)."""
    _params, filterset = _filtered(request)
    if filterset.errors:
        problems = "; ".join(f"{k}: {v}" for k, v in filter_errors(filterset).items())
        return HttpResponse(f"Bad filter: {problems}\n", status=400, content_type="text/plain; charset=utf-8")
    return score_reports_csv_response(filterset.qs)


@require_POST
@instructor_required
def session_regrade(request, pk):
    """The session page's Re-grade button (SPEC §9): a re-grade from the evidence lab, or a message saying why not."""
    session = LabletSession.objects.filter(pk=pk).first()
    if session is None:
        raise Http404("No such session")
    try:
        regrade, created = regrade_request(session, actor=request.user)
    except InvalidTransition as exc:
        messages.error(request, f"Re-grade refused: {exc.detail}")
    else:
        text = "Re-grade started" if created else "A re-grade is already under way"
        messages.success(request, f"{text}: its progress shows under Evidence and in the history.")
    return redirect(f"/sessions/{pk}/#evidence")
