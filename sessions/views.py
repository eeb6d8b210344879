"""Instructor pages for sessions and definitions (SPEC §5.4); the page helpers they share with every app's
views are `lcm.pages`.

Views are thin: they read through selectors and FilterSets, write through the services and
render `templates/<app>/<page>.html`, or only a fragment of it (`page.html#live`) for htmx.

Live updates (SPEC §5.3) are short polls of a page's `live` fragment. The poll URL carries a
digest of what the browser shows; when nothing changed the server answers 204 and htmx
leaves the page alone, so a form being typed into or a focused button is only replaced
when the data really changed. A session detail stops polling at a terminal state.
"""

import uuid
from datetime import UTC, date, datetime, time, timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.management import get_commands, load_command_class
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.functional import SimpleLazyObject
from django.views.decorators.http import require_POST

from lcm.errors import Conflict, first_error_line
from lcm.fsm import InvalidTransition
from lcm.loops import loop_health
from lcm.pages import (
    Choice,
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
from scheduling.attention import attention_items, waiting_reason
from scheduling.selectors import worker_capacities
from sessions import selectors
from sessions.charts import dashboard_charts
from sessions.definitions import definition_transition
from sessions.exam_views import todays_exams
from sessions.filters import DefinitionFilterSet, DefinitionListOptions, SessionFilterSet
from sessions.forms import DefinitionCreateForm, ExtendForm, ManualScoreForm, SessionCreateForm, SessionListOptions
from sessions.models import Exam, LabletDefinition, LabletSession, SessionStatusChange
from sessions.page_actions import (
    SESSION_ACTIONS,
    SessionAction,
    carried_fields,
    needs_confirmation,
    run_session_action,
    session_buttons,
)
from sessions.selectors import queue_depth
from sessions.states import ACTIVE, DEFINITION_TRANSITIONS, TERMINAL, DefinitionStatus, GradingMode, SessionStatus
from workers.models import CMLWorker, SystemSettings

S = SessionStatus

# ---------------------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------------------


def fleet_summary(capacities) -> dict:
    """Totals over the RUNNING/DRAINING workers: what the fleet offers and what sessions hold."""
    live = [c for c in capacities if c.status in ("RUNNING", "DRAINING")]
    fields = ("cpu", "memory", "storage", "nodes", "ports")
    summary = {
        f"{f}_{kind}": sum(getattr(c, f"{f}_{kind}") for c in live) for f in fields for kind in ("used", "total")
    }
    summary["workers"] = len(live)
    return summary


@instructor_required
@live_page()
def dashboard(request):
    """Counts by state, today's exams, fleet capacity, loop health and recent events; refreshes itself."""
    capacities = sorted(worker_capacities().values(), key=lambda c: c.name)
    counts = selectors.session_counts_by_status()
    context = page_context(
        request,
        "dashboard",
        counts=counts,
        active_total=sum(n for status, n in counts.items() if status in ACTIVE),
        capacities=capacities,
        fleet=fleet_summary(capacities),
        recent=selectors.session_list().order_by("-created_at")[:10],
        events=SessionStatusChange.objects.select_related("session").order_by("-at", "-id")[:12],
        loops=loop_health(),
        queue=queue_depth(),
        attention=attention_items(),
        todays_exams=todays_exams(),
    )
    # Drawn once per page load, outside the polled fragment (`includes/dashboard_charts.html`): read only then.
    cpu_share = fleet_cpu_share(context["fleet"])
    context["charts"] = SimpleLazyObject(lambda: dashboard_charts(cpu_share))
    return render_live(request, "sessions/dashboard.html", context)


def fleet_cpu_share(fleet: dict) -> float | None:
    """The share of the fleet's CPU sessions hold now (None without a worker taking sessions)."""
    return fleet["cpu_used"] / fleet["cpu_total"] if fleet["cpu_total"] else None


# ---------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------

ACTIVE_FILTER = ",".join(s for s in SessionStatus.values if s in ACTIVE)
STATUS_PRESETS = (
    (ACTIVE_FILTER, "Not finished"),
    ("READY,RUNNING", "Ready or running"),
    ("COLLECTING,GRADING", "Being graded"),
)


def _date_window(params: QueryDict) -> str | None:
    """`?date=YYYY-MM-DD` is the day [00:00, 24:00) UTC as `from`/`to` (unless those are given); returns an error."""
    raw = params.get("date", "").strip()
    if not raw:
        return None
    try:
        day = parse_date(raw)
    except ValueError:
        day = None
    if day is None:
        return f"{raw!r} is not a date (YYYY-MM-DD)."
    start = datetime.combine(day, time.min, tzinfo=UTC)
    params.setdefault("from", start.isoformat())
    if day < date.max:  # the last day LCM can represent has no next midnight: `from` alone bounds it
        params.setdefault("to", (start + timedelta(days=1)).isoformat())
    return None


@instructor_required
@live_page()
def session_list(request):
    """Filterable sessions with live status, and the "New session" form (POST books a session)."""
    form = SessionCreateForm(request.POST or None) if request.method == "POST" else SessionCreateForm()
    status = 200
    if request.method == "POST":
        session = form.submit(actor=request.user) if form.is_valid() else None
        if session is not None:
            messages.success(request, f"Booked a session for {session.owner}: it is {session.status}.")
            url = reverse("sessions:session_detail", args=[session.pk])
            if request.htmx:
                return HttpResponse(headers={"HX-Redirect": url})
            return redirect(url)
        status = 422
        if request.htmx:
            return render(request, "sessions/session_list.html#new_session", {"form": form}, status=status)

    params = clean_params(request.GET)
    date_error = _date_window(params)
    filterset = SessionFilterSet(params, queryset=selectors.session_list().select_related("exam"))
    date_errors = {"date": date_error} if date_error else {}
    listing = list_page(params, filterset, SessionListOptions(params), errors=date_errors)
    selected_status = params.get("status", "")
    choices = status_choices(SessionStatus.values, STATUS_PRESETS)
    if selected_status and selected_status not in {c.value for c in choices}:
        choices.insert(0, Choice(selected_status, selected_status))
    context = page_context(
        request,
        "sessions",
        **listing,
        status_choices=choices,
        definitions=LabletDefinition.objects.only("id", "name", "version", "status").order_by("name", "-created_at"),
        workers=_worker_options(),
        exams=_exam_options(filterset),
        exact_filters=[(name, value) for name in ("owner", "reservation_id") for value in params.getlist(name)],
        form=form,
        form_open=request.method == "POST" or "new" in request.GET,
    )
    return render_live(request, "sessions/session_list.html", context, status=status)


def _exam_options(filterset) -> list[Exam]:
    """The exam filter's choices: the 200 latest exams, and the one filtered by when it is older."""
    exams = list(Exam.objects.only("id", "name", "timeslot_start").order_by("-timeslot_start", "-id")[:200])
    selected = filterset.form.cleaned_data.get("exam") if filterset.is_valid() else None
    if selected and all(e.pk != selected for e in exams):
        exams += Exam.objects.only("id", "name", "timeslot_start").filter(pk=selected)
    return exams


def _worker_options():
    # `status` too: the FSM mixin reads it on load (a deferred field would cost a query per worker).
    return CMLWorker.objects.only("id", "name", "status").order_by("name")


def _progress(session) -> list[dict] | None:
    """Instantiation steps (SPEC §3.3) with what is known about each, while the session is being prepared."""
    if session.status not in (S.SCHEDULED, S.INSTANTIATING, S.READY):
        return None
    lab = session.lab_record
    lab_status = lab.status if lab else ""
    nodes = (lab.node_count if lab and lab.node_count else None) or session.definition.node_count
    ready = session.status == S.READY
    booted = nodes if lab_status == "BOOTED" or ready else None
    has_user_session = session.user_session is not None

    def state(done, current):
        return "done" if done else ("current" if current else "todo")

    instantiating = session.status == S.INSTANTIATING
    lab_done = bool(lab) and lab_status not in ("IMPORTING", "")
    return [
        {"label": "Placed on a worker", "state": "done", "detail": session.worker.name if session.worker else ""},
        {
            "label": "Lab imported or reused",
            "state": state(lab_done or ready, instantiating and not lab_done),
            "detail": f"{lab.cml_lab_id} ({lab_status})" if lab else "",
        },
        {
            "label": "Lab started, nodes booted",
            "state": state(lab_status == "BOOTED" or ready, instantiating and lab_done),
            "detail": f"{booted if booted is not None else '?'}/{nodes} nodes booted",
        },
        {
            "label": "LDS session opened",
            "state": state(has_user_session, instantiating and lab_status == "BOOTED"),
            "detail": "",
        },
        {"label": "Ready for the candidate", "state": state(ready, False), "detail": ""},
    ]


def _candidate_link(session) -> str:
    """The candidate's launch URL, offered to copy while it is theirs to use (READY, RUNNING; SPEC §3.4a)."""
    user_session = session.user_session
    if session.status not in (S.READY, S.RUNNING) or user_session is None:
        return ""
    url = user_session.login_url or ""
    return url if url.startswith(("https://", "http://")) else ""


def _monitor_url(session) -> str:
    """The session's lab in its worker's CML (watching it there never starts the candidate's clock)."""
    if session.status in TERMINAL or not (session.worker and session.worker.cml_base_url and session.cml_lab_id):
        return ""
    return f"{session.worker.cml_base_url.rstrip('/')}/lab/{session.cml_lab_id}"


def _waiting_for(session) -> str:
    """What the session is waiting for when nobody but a person can move it on."""
    if session.status == S.COLLECTING and session.definition.grading_mode == GradingMode.MANUAL:
        return "Waiting for an instructor: Start Grading or Skip Grading."
    if session.status == S.STOPPED and session.hold_until is not None:
        return f"Lab kept for review until {session.hold_until:%Y-%m-%d %H:%M} UTC; Archive ends the hold now."
    if session.reinstantiate_requested_at and session.status in (S.READY, S.RUNNING):
        return "Re-instantiating: a fresh lab with the same ports is coming up."
    return waiting_reason(session)


def _detail_context(request, session, *, extend_form=None, score_form=None) -> dict:
    actions = session_buttons(session)
    latest = max(session.timeslot_end, timezone.now())
    suggested_end = latest + timedelta(minutes=15) if latest.year < 9999 else latest  # no overflow at datetime.max
    return page_context(
        request,
        "sessions",
        session=session,
        actions=actions,
        history=list(reversed(session.history.all())),
        user_session=session.user_session,
        grading=session.grading_session,
        reports=list(session.score_reports.all()),
        progress=_progress(session),
        extend_form=extend_form or ExtendForm(initial={"timeslot_end": suggested_end}),
        candidate_link=_candidate_link(session),
        waiting_for=_waiting_for(session),
        monitor_url=_monitor_url(session),
        score_form=score_form or ManualScoreForm(),
        # A re-grade under way (SPEC §9) keeps an ARCHIVED session's page live, so its progress shows.
        terminal=session.status in TERMINAL and not session.regrades.exclude(status__in=("DONE", "FAILED")).exists(),
    )


def _load_session(pk):
    try:
        return selectors.session_detail(pk)
    except LabletSession.DoesNotExist:
        raise Http404("No such session") from None


def _render_detail(request, session_pk, *, status=200, **forms):
    session = _load_session(session_pk)
    context = _detail_context(request, session, **forms)
    return render_live(
        request,
        "sessions/session_detail.html",
        context,
        status=status,
        poll=not context["terminal"],
        path=reverse("sessions:session_detail", args=[session.pk]),
    )


@instructor_required
@live_page(lambda pk: [f"session:{pk}"])
def session_detail(request, pk):
    """One session: timeslot, worker, ports, lab, progress, children, timeline and its buttons; live."""
    return _render_detail(request, pk)


def _stale(action: SessionAction, current: str) -> str:
    return f"“{action.label}” no longer applies: the session is now {current}. The page shows its current state."


def _confirm_page(request, session, spec, *, carried=(), status=200):
    """The confirm step of a button that asks first: what it touches, and the button that does it."""
    context = page_context(
        request,
        "sessions",
        session=session,
        spec=spec,
        question=spec.prompt(session),
        carried=list(carried),
        placement_lead=SystemSettings.load().placement_lead_minutes,
    )
    return render(request, "sessions/session_confirm.html", context, status=status)


@instructor_required
def session_confirm(request, pk, action):
    """GET: the confirm page of a button that asks first (Requeue's only way; the others' without JavaScript)."""
    spec = SESSION_ACTIONS.get(action)
    if spec is None or not spec.confirm:
        raise Http404("No such action")
    session = _load_session(pk)
    if session.status not in spec.valid_from:
        messages.warning(request, _stale(spec, session.status))
        return redirect("sessions:session_detail", pk=pk)
    return _confirm_page(request, session, spec)


@require_POST
@instructor_required
def session_action(request, pk, action):
    """Run one button of the session detail through the services; a stale button gets a message (409). A button
    that asks first, posted unconfirmed, changes nothing: htmx is sent to its confirm page, a plain form gets it."""
    spec = SESSION_ACTIONS.get(action)
    if spec is None:
        raise Http404("No such action")
    session = get_object_or_404(LabletSession, pk=pk)
    if needs_confirmation(spec, request.POST) and session.status in spec.valid_from:
        if request.htmx:
            return HttpResponse(headers={"HX-Redirect": reverse("sessions:session_confirm", args=[pk, action])})
        return _confirm_page(request, _load_session(pk), spec, carried=carried_fields(request.POST))
    # The state the page showed when the button was drawn; without it, the current one.
    expected = request.POST.get("expected", "").strip().upper() or session.status
    forms: dict = {}
    if session.status != expected or session.status not in spec.valid_from:
        text, level, status = _stale(spec, session.status), "warning", 409
    else:
        try:
            text, level, status = run_session_action(request, session, spec, expected, forms), "success", 200
        except InvalidTransition:
            # Someone else moved it between our read and the service's row lock.
            current = LabletSession.objects.filter(pk=pk).values_list("status", flat=True).first() or session.status
            text, level, status = _stale(spec, current), "warning", 409
        except (ValidationError, Conflict) as exc:
            text, level, status = f"{spec.label}: {first_error_line(exc)}", "error", 422
    return action_response(
        request,
        page_url=reverse("sessions:session_detail", args=[pk]),
        render_page=lambda code: _render_detail(request, pk, status=code, **forms),
        text=text,
        level=level,
        status=status,
    )


# ---------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------

# Admin buttons on a definition: target status → label.
DEFINITION_ACTIONS = {
    DefinitionStatus.ACTIVE: "Activate",
    DefinitionStatus.INACTIVE: "Deactivate",
    DefinitionStatus.DEPRECATED: "Deprecate",
    DefinitionStatus.ARCHIVED: "Archive definition",
}


@instructor_required
def definition_list(request):
    """Definitions with their requirements and how many sessions use them."""
    params = clean_params(request.GET)
    rows = LabletDefinition.objects.annotate(
        session_count=Count("sessions"), active_count=Count("sessions", filter=Q(sessions__status__in=ACTIVE))
    )
    filterset = DefinitionFilterSet(params, queryset=rows)
    context = page_context(
        request,
        "definitions",
        **list_page(params, filterset, DefinitionListOptions(params)),
        status_choices=status_choices(DefinitionStatus.values),
    )
    return render(request, "sessions/definition_list.html", context)


@instructor_required
def definition_detail(request, pk):
    """One definition: requirements, port template, YAML, its sessions by state, admin status buttons."""
    definition = get_object_or_404(LabletDefinition, pk=pk)
    by_status = {
        row["status"]: row["n"] for row in definition.sessions.order_by().values("status").annotate(n=Count("id"))
    }
    context = page_context(
        request,
        "definitions",
        definition=definition,
        by_status=[(s, by_status[s]) for s in SessionStatus.values if by_status.get(s)],
        recent=definition.sessions.select_related("worker").order_by("-created_at")[:10],
        actions=[
            (target, DEFINITION_ACTIONS[target])
            for target in sorted(DEFINITION_TRANSITIONS.get(definition.status, ()), key=list(DEFINITION_ACTIONS).index)
        ],
    )
    return render(request, "sessions/definition_detail.html", context)


@admin_required
def definition_create(request):
    """Upload a definition (admin): field errors keep the input."""
    source = None
    if request.method == "GET" and request.GET.get("from"):
        # "New version from this": the form pre-filled from that definition, the version left to the admin.
        source = LabletDefinition.objects.filter(pk=_uuid_or_none(request.GET["from"])).first()
    initial = DefinitionCreateForm.initial_from(source) if source else None
    form = DefinitionCreateForm(request.POST or None, request.FILES or None, initial=initial)
    status = 200
    if request.method == "POST":
        definition = form.submit(actor=request.user) if form.is_valid() else None
        if definition is not None:
            messages.success(request, f"Definition {definition} created ({definition.status}).")
            return redirect("sessions:definition_detail", pk=definition.pk)
        status = 422
    context = page_context(request, "definitions", form=form, source=source)
    return render(request, "sessions/definition_form.html", context, status=status)


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


@require_POST
@admin_required
def definition_action(request, pk):
    """Change a definition's status (admin); a stale button gets a message."""
    definition = get_object_or_404(LabletDefinition, pk=pk)
    target = request.POST.get("target", "").strip().upper()
    expected = request.POST.get("expected", "").strip().upper()
    label = DEFINITION_ACTIONS.get(target, target.title() or "Change status")
    if target == DefinitionStatus.ARCHIVED and request.POST.get("confirmed") != "1" and expected == definition.status:
        # Archiving asks first (issue 19): the dialog's post carries `confirmed=1`, a plain form gets this page.
        context = page_context(
            request,
            "definitions",
            definition=definition,
            label=label,
            active=definition.sessions.filter(status__in=ACTIVE).count(),
        )
        return render(request, "sessions/definition_confirm.html", context)
    if expected and expected != definition.status:
        messages.warning(request, f"“{label}” no longer applies: the definition is now {definition.status}.")
    else:
        try:
            definition = definition_transition(definition, target, actor=request.user, reason="from the page")
            messages.success(request, f"Definition {definition} is now {definition.status}.")
        except (InvalidTransition, ValueError) as exc:
            messages.warning(request, f"{label}: {exc}")
    return redirect("sessions:definition_detail", pk=pk)


# ---------------------------------------------------------------------------------------
# Help
# ---------------------------------------------------------------------------------------

COMMAND_APPS = ("lcm", "sessions", "workers", "scheduling", "grading")


def project_commands() -> list[tuple[str, str]]:
    """`(name, first line of its help)` of every `manage.py` command LCM ships, by name (read from the commands
    themselves, so the list stays true)."""
    found = []
    for name, app in sorted(get_commands().items()):
        if app in COMMAND_APPS:
            text = " ".join((load_command_class(app, name).help or "").split())
            found.append((name, text))
    return found


@instructor_required
def help_page(request):
    """Where to find things: the REST API and its docs, and the `manage.py` commands."""
    context = page_context(request, "help", commands=project_commands())
    return render(request, "sessions/help.html", context)
