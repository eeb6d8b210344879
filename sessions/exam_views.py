"""Instructor pages for exams (SPEC §8): the list, the new-exam form with its capacity check, the exam's
live roster with bulk actions behind a confirmation, and the results as CSV.

Writes go through `sessions.exams` (booking all or nothing under the admission policy, bulk actions
per session) and the capacity check through `scheduling.admission`; the pages only read and render.
A bulk action is two requests: GET shows a confirmation the server renders, naming how many sessions
the action touches now; POST (with that number) acts and lists the sessions it refused. When the
roster moved on in between, the confirmation is shown again with the new number instead of acting.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from django.contrib import messages
from django.db.models import Count
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from lcm.pages import clean_params, instructor_required, list_page, live_page, page_context, render_live
from lcm.roles import is_admin
from scheduling.admission import DIMENSIONS, LABELS, admission_mode, capacity_check
from sessions.booking import EXTENDABLE
from sessions.exam_forms import BulkExtendForm, ExamForm
from sessions.exams import CapacityRefused, exam_action, results_csv
from sessions.filters import ExamFilterSet, ExamListOptions
from sessions.models import Exam, LabletSession
from sessions.states import TERMINAL, SessionStatus

S = SessionStatus


@dataclass(frozen=True)
class BulkAction:
    """One bulk button of the exam page: what it is called and the states of the sessions it acts on (as
    `exam_action` decides: the others are refused and change nothing)."""

    slug: str
    label: str
    verb: str
    applies_to: frozenset
    style: str = "primary"


BULK_ACTIONS = {
    a.slug: a
    for a in (
        BulkAction("start", "Start", "start", frozenset({S.READY})),
        BulkAction("extend", "Extend", "extend", frozenset(EXTENDABLE), "secondary"),
        BulkAction("finish", "Finish", "finish", frozenset({S.RUNNING})),
        BulkAction("terminate", "Terminate", "terminate", frozenset(set(S.values) - TERMINAL), "danger"),
    )
}


# ---------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------


def counts_by_exam(exam_ids) -> dict[int, dict[str, int]]:
    """`{exam id: {status: n}}` for the given exams, in one query (statuses with no session are left out)."""
    counts: dict[int, dict[str, int]] = {}
    rows = LabletSession.objects.filter(exam_id__in=list(exam_ids)).order_by().values("exam_id", "status")
    for row in rows.annotate(n=Count("id")):
        counts.setdefault(row["exam_id"], {})[row["status"]] = row["n"]
    return counts


def with_counts(exams) -> list[Exam]:
    """The exams, each with `.counts` (status → n, in lifecycle order) and `.total`."""
    exams = list(exams)
    counts = counts_by_exam(e.pk for e in exams)
    for exam in exams:
        mine = counts.get(exam.pk, {})
        exam.counts = [(s, mine[s]) for s in S.values if mine.get(s)]
        exam.total = sum(mine.values())
    return exams


def todays_exams(now=None) -> list[Exam]:
    """Exams whose timeslot overlaps today (UTC), earliest first, with their counts (two queries)."""
    now = now or timezone.now()
    day = datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)
    exams = (
        Exam.objects.select_related("definition")
        .filter(timeslot_start__lt=day + timedelta(days=1), timeslot_end__gt=day)
        .order_by("timeslot_start", "id")[:20]
    )
    return with_counts(exams)


def _roster(exam) -> list[LabletSession]:
    """The exam's sessions with what the roster shows (status, time left, score), in a fixed number of queries."""
    return list(
        exam.sessions.select_related("worker").prefetch_related("score_reports").order_by("owner", "created_at", "id")
    )


def _touched(sessions, action: BulkAction) -> list[LabletSession]:
    return [s for s in sessions if s.status in action.applies_to]


def _load_exam(pk) -> Exam:
    return get_object_or_404(Exam.objects.select_related("definition"), pk=pk)


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


@instructor_required
def exam_list(request):
    """Exams with counts by state: `?q=` searches the name and notes, `?sort=` name, start or size (default: newest
    timeslot first), `?page_size=`."""
    params = clean_params(request.GET)
    filterset = ExamFilterSet(params, queryset=Exam.objects.select_related("definition"))
    listing = list_page(params, filterset, ExamListOptions(params))
    listing["page"].object_list = with_counts(listing["page"].object_list)
    return render(request, "exams/exam_list.html", page_context(request, "exams", **listing))


def _verdict_rows(verdict) -> list[dict]:
    """The verdict's numbers per dimension (CPU, memory, …) at its worst instant, for a table."""
    return [
        {
            "name": LABELS.get(name, name),
            "needed": verdict.needed.get(name),
            "available": verdict.available.get(name),
            "shortfall": verdict.shortfall.get(name),
        }
        for name in DIMENSIONS
        if name in verdict.needed or name in verdict.available
    ]


def _form_page(request, form, *, verdict=None, refused=False, status=200):
    context = page_context(
        request,
        "exams",
        form=form,
        verdict=verdict,
        verdict_rows=_verdict_rows(verdict) if verdict is not None else [],
        refused=refused,
        policy=admission_mode(None),
    )
    return render(request, "exams/exam_form.html", context, status=status)


@require_http_methods(["GET", "POST"])
@instructor_required
def exam_create(request):
    """The new-exam form. "Check capacity" shows the verdict for the roster; "Book" books it all or nothing
    under the admission policy. Errors (per row for the roster) keep everything that was entered."""
    if request.method == "GET":
        return _form_page(request, ExamForm())
    form = ExamForm(request.POST, request.FILES)
    if not form.is_valid():
        return _form_page(request, form, status=422)
    data = form.cleaned_data
    if request.POST.get("step") != "book":
        verdict = capacity_check(data["definition"], data["timeslot_start"], data["timeslot_end"], form.count)
        return _form_page(request, form, verdict=verdict)
    try:
        booking = form.submit(actor=request.user)
    except CapacityRefused as exc:
        return _form_page(request, form, verdict=exc.verdict, refused=True, status=409)
    if booking is None:
        return _form_page(request, form, status=422)
    exam = booking.exam
    messages.success(request, f"Booked {len(booking.sessions)} sessions for {exam.name}.")
    verdict = booking.verdict
    if verdict is not None and not verdict.fits:
        reasons = "; ".join(verdict.reasons) or "the fleet cannot hold them all"
        messages.warning(request, f"Booked although the capacity check says it does not fit: {reasons}.")
    return redirect("sessions:exam_detail", pk=exam.pk)


def _detail_context(request, exam) -> dict:
    sessions = _roster(exam)
    counts = {}
    for session in sessions:
        counts[session.status] = counts.get(session.status, 0) + 1
    return page_context(
        request,
        "exams",
        exam=exam,
        sessions=sessions,
        counts=[(s, counts[s]) for s in S.values if counts.get(s)],
        touches={slug: len(_touched(sessions, action)) for slug, action in BULK_ACTIONS.items()},
        extend_form=BulkExtendForm(),
        all_done=bool(sessions) and all(s.status in TERMINAL for s in sessions),
    )


@instructor_required
@live_page(lambda pk: [f"exam:{pk}"])
def exam_detail(request, pk):
    """The exam's live roster (owner, status, time left, score), counts by state and the bulk buttons."""
    exam = _load_exam(pk)
    context = _detail_context(request, exam)
    return render_live(
        request,
        "exams/exam_detail.html",
        context,
        poll=not context["all_done"],
        path=reverse("sessions:exam_detail", args=[exam.pk]),
    )


def _confirm_page(request, exam, action, extend, *, changed=None, status=200):
    roster = _roster(exam)
    sessions = _touched(roster, action)
    context = page_context(
        request,
        "exams",
        exam=exam,
        action=action,
        sessions=sessions,
        count=len(sessions),
        others=len(roster) - len(sessions),
        extend=extend,
        changed=changed,
    )
    return render(request, "exams/exam_confirm.html", context, status=status)


@require_http_methods(["GET", "POST"])
@instructor_required
def exam_bulk_action(request, pk, action):
    """GET: the confirmation naming how many sessions the action touches. POST: act on them through
    `exam_action` and show the outcome, the refused sessions with why."""
    spec = BULK_ACTIONS.get(action)
    if spec is None:
        raise Http404("No such action")
    exam = _load_exam(pk)
    data = request.POST if request.method == "POST" else request.GET
    extend = None
    if spec.slug == "extend":
        extend = BulkExtendForm(data)
        if not extend.is_valid():
            messages.error(request, "Extend: choose +5, +10 or +15 minutes.")
            return redirect("sessions:exam_detail", pk=exam.pk)
    if request.method == "GET":
        return _confirm_page(request, exam, spec, extend)
    touched = _touched(_roster(exam), spec)
    confirmed = request.POST.get("count", "")
    if confirmed != str(len(touched)):
        return _confirm_page(request, exam, spec, extend, changed=confirmed, status=409)
    options = extend.cleaned_data if extend else {}
    results = exam_action(
        exam,
        spec.verb,
        actor=request.user,
        minutes=options.get("minutes"),
        reason=options.get("reason") or f"{spec.label} for the exam {exam.name} from the exam page",
        is_admin=is_admin(request.user),
    )
    context = page_context(
        request,
        "exams",
        exam=exam,
        action=spec,
        extend=extend,
        done=[r for r in results if r.result == "ok"],
        refused=[r for r in results if r.result != "ok"],
    )
    return render(request, "exams/exam_action_result.html", context)


@instructor_required
def exam_results_csv(request, pk):
    """The exam's results (`sessions.exams.results_csv`) as a CSV download."""
    exam = _load_exam(pk)
    response = HttpResponse(results_csv(exam), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="exam-{exam.pk}-results.csv"'
    return response
