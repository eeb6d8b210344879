"""Worker pages (SPEC §5.4): the fleet with capacity bars, licence and metrics; one worker with its
sessions, labs and history; admin actions through the worker services."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from lcm.errors import first_error_line
from lcm.fsm import InvalidTransition
from lcm.pages import (
    action_response,
    admin_required,
    clean_params,
    instructor_required,
    list_page,
    live_page,
    page_context,
    render_live,
    status_choices,
)
from scheduling.selectors import worker_capacities
from sessions.states import SessionStatus, capacity_holding_q
from workers.filters import WorkerFilterSet, WorkerListOptions
from workers.forms import WorkerCreateForm
from workers.models import CMLWorker, SystemSettings, WorkerTemplate
from workers.services import worker_cancel_drain, worker_drain, worker_set_desired
from workers.states import DesiredStatus, LabStatus, LicenseType, WorkerStatus

W = WorkerStatus
S = SessionStatus
_GONE = {W.TERMINATING, W.TERMINATED}


@dataclass(frozen=True)
class WorkerAction:
    """An admin button on a worker: label, when it applies, and an optional confirmation."""

    slug: str
    label: str
    style: str = "secondary"
    confirm: str = ""

    def applies(self, worker) -> bool:
        desired, status = worker.desired_status, worker.status
        return {
            "start": desired != DesiredStatus.RUNNING and status not in _GONE,
            "stop": desired == DesiredStatus.RUNNING and status not in _GONE | {W.STOPPING, W.STOPPED},
            "drain": status == W.RUNNING,
            "cancel-drain": status == W.DRAINING,
            "terminate": desired != DesiredStatus.TERMINATED and status not in _GONE,
        }[self.slug]


# Buttons that ask first (SPEC §11, issue 19): a post without `confirmed=1` goes to the confirm page, which shows
# the sessions on the worker and those cut short. Stop and Drain always show it; Terminate asks in a dialog with
# JavaScript (its `confirm`, whose request carries `confirmed=1`) and gets the page without.
CONFIRMED_ACTIONS = {"stop", "drain", "terminate"}
PAGE_ACTIONS = {"stop", "drain"}

WORKER_ACTIONS = {
    a.slug: a
    for a in (
        WorkerAction("start", "Start", "primary"),
        WorkerAction("stop", "Stop"),
        WorkerAction("drain", "Drain"),
        WorkerAction("cancel-drain", "Cancel drain"),
        WorkerAction(
            "terminate",
            "Terminate worker",
            "danger",
            "Terminate this worker? Its EC2 instance is destroyed; sessions on it expire. This cannot be undone.",
        ),
    )
}


def _cards(workers, capacities):
    return [(w, capacities.get(str(w.pk))) for w in workers]


@instructor_required
@live_page()
def worker_list(request):
    """The fleet: status, capacity bars, licence, metrics; admins also get "New worker"."""
    return _render_list(request)


def _render_list(request, form=None, status=200):
    params = clean_params(request.GET)
    filterset = WorkerFilterSet(params, queryset=CMLWorker.objects.select_related("template"))
    listing = list_page(params, filterset, WorkerListOptions(params))
    capacities = worker_capacities([w.pk for w in listing["page"]])
    context = page_context(
        request,
        "workers",
        **listing,
        cards=_cards(listing["page"], capacities),
        status_choices=status_choices(WorkerStatus.values),
        licences=LicenseType.values,
        templates=WorkerTemplate.objects.only("id", "name").order_by("name"),
        form=form or WorkerCreateForm(),
    )
    return render_live(request, "workers/worker_list.html", context, status=status, path=reverse("workers:worker_list"))


@require_http_methods(["GET", "POST"])
@admin_required
def worker_create(request):
    """Create a worker from a template (admin). GET: the form on a page of its own; errors show where the form
    was posted from (this page, or the workers page) with the input kept."""
    if request.method == "GET":
        return render(request, "workers/worker_form.html", page_context(request, "workers", form=WorkerCreateForm()))
    form = WorkerCreateForm(request.POST)
    worker = form.submit(actor=request.user) if form.is_valid() else None
    if worker is not None:
        messages.success(request, f"Worker {worker.name} created: it is {worker.status} and will be launched.")
        return redirect("workers:worker_detail", pk=worker.pk)
    if request.POST.get("from_page") == "1":
        return render(request, "workers/worker_form.html", page_context(request, "workers", form=form), status=422)
    return _render_list(request, form=form, status=422)


def _detail_context(request, worker) -> dict:
    capacity = worker_capacities([worker.pk]).get(str(worker.pk))
    sessions = (
        worker.sessions.select_related("definition")
        .annotate(
            holding=Case(
                When(capacity_holding_q(), then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("holding", "-timeslot_start")[:50]
    )
    labs = (
        worker.lab_records.select_related("definition", "active_session")
        .prefetch_related("port_allocations")
        .annotate(
            gone=Case(When(status=LabStatus.DELETED, then=Value(1)), default=Value(0), output_field=IntegerField())
        )
        .order_by("gone", "created_at")[:100]
    )
    return page_context(
        request,
        "workers",
        worker=worker,
        capacity=capacity,
        sessions=sessions,
        labs=labs,
        history=worker.history.order_by("-at", "-id")[:30],
        actions=[a for a in WORKER_ACTIONS.values() if a.applies(worker)],
        page_actions=PAGE_ACTIONS,
    )


def _render_detail(request, pk, status=200):
    worker = get_object_or_404(CMLWorker.objects.select_related("template"), pk=pk)
    return render_live(
        request,
        "workers/worker_detail.html",
        _detail_context(request, worker),
        status=status,
        poll=worker.status != W.TERMINATED,
        path=reverse("workers:worker_detail", args=[worker.pk]),
    )


@instructor_required
@live_page()
def worker_detail(request, pk):
    """One worker: capacity, licence, metrics, EC2/CML facts, its sessions, labs and history; live."""
    return _render_detail(request, pk)


def affected_sessions(worker, spec: WorkerAction, now=None) -> tuple[list, list, datetime | None]:
    """What a Stop or Drain of `worker` affects: the sessions holding capacity on it, those among them booked past
    the point where they would be cut off (a drain's deadline, or now for a stop), and that deadline."""
    now = now or timezone.now()
    sessions = list(
        worker.sessions.select_related("definition").filter(capacity_holding_q()).order_by("timeslot_end", "owner")
    )
    deadline = now
    if spec.slug == "drain":
        deadline = now + timedelta(minutes=SystemSettings.load().drain_timeout_minutes)
    cut = [s for s in sessions if s.timeslot_end > deadline and s.status not in (S.STOPPING, S.EXPIRED, S.TERMINATED)]
    return sessions, cut, deadline


@admin_required
def worker_confirm(request, pk, action):
    """The confirm step of Stop, Drain and Terminate: the sessions affected, and a warning for those cut short."""
    spec = WORKER_ACTIONS.get(action)
    if spec is None or action not in CONFIRMED_ACTIONS:
        raise Http404("No such action")
    worker = get_object_or_404(CMLWorker, pk=pk)
    if not spec.applies(worker):
        messages.warning(request, f"“{spec.label}” does not apply: {worker.name} is {worker.status}.")
        return redirect("workers:worker_detail", pk=pk)
    sessions, cut, deadline = affected_sessions(worker, spec)
    context = page_context(request, "workers", worker=worker, spec=spec, sessions=sessions, cut=cut, deadline=deadline)
    return render(request, "workers/worker_confirm.html", context)


def _run_worker_action(request, worker, spec: WorkerAction) -> str:
    actor, reason = request.user, f"{spec.label} from the worker page"
    if spec.slug == "start":
        worker_set_desired(worker, DesiredStatus.RUNNING, actor=actor, reason=reason)
        return f"{worker.name} will be started."
    if spec.slug == "stop":
        worker_set_desired(worker, DesiredStatus.STOPPED, actor=actor, reason=reason)
        return f"{worker.name} will be stopped."
    if spec.slug == "drain":
        worker = worker_drain(worker, actor=actor, reason=reason)
        return f"{worker.name} is draining: it takes no new sessions."
    if spec.slug == "cancel-drain":
        worker = worker_cancel_drain(worker, actor=actor, reason=reason)
        return f"Drain cancelled: {worker.name} is RUNNING again."
    worker_set_desired(worker, DesiredStatus.TERMINATED, actor=actor, reason=reason)
    return f"{worker.name} will be terminated."


@require_POST
@admin_required
def worker_action(request, pk, action):
    """Run an admin button on a worker through the services; a stale button gets a message (409)."""
    spec = WORKER_ACTIONS.get(action)
    if spec is None:
        raise Http404("No such action")
    worker = get_object_or_404(CMLWorker, pk=pk)
    if action in CONFIRMED_ACTIONS and request.POST.get("confirmed") != "1":
        url = reverse("workers:worker_confirm", args=[pk, action])
        return HttpResponse(headers={"HX-Redirect": url}) if request.htmx else redirect(url)
    expected = request.POST.get("expected", "").strip().upper() or worker.status
    if worker.status != expected or not spec.applies(worker):
        text = f"“{spec.label}” no longer applies: {worker.name} is {worker.status} (wanted {worker.desired_status})."
        level, status = "warning", 409
    else:
        try:
            text, level, status = _run_worker_action(request, worker, spec), "success", 200
        except InvalidTransition as exc:
            text, level, status = f"“{spec.label}” no longer applies: {exc.detail}", "warning", 409
        except (ValidationError, ValueError) as exc:
            text, level, status = f"{spec.label}: {first_error_line(exc)}", "error", 422
    return action_response(
        request,
        page_url=reverse("workers:worker_detail", args=[pk]),
        render_page=lambda code: _render_detail(request, pk, status=code),
        text=text,
        level=level,
        status=status,
    )
