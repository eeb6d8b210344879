"""Scheduler and settings pages (SPEC §5.4): queue depth, loop health, leader, placement preview, SystemSettings."""

from datetime import timedelta

from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render
from django.utils import timezone

from lcm.coordination import coordinator
from lcm.fsm import actor_name
from lcm.loops import loop_health
from lcm.pages import (
    admin_required,
    clean_params,
    instructor_required,
    list_page,
    live_page,
    page_context,
    render_live,
)
from scheduling.attention import attention_items, placement_reasons
from scheduling.forms import PlacementPreviewForm, QueueListOptions, SystemSettingsForm
from scheduling.selectors import placement_preview
from sessions.filters import SessionSearchFilterSet
from sessions.models import LabletSession
from sessions.selectors import queue_depth
from sessions.states import SessionStatus
from workers.models import SystemSettings

S = SessionStatus


def placement_leader() -> dict:
    """Who holds the placement leader lease (SPEC §4), as the coordination backend tells it."""
    try:
        holder = coordinator().leader("placement")
    except Exception:  # coordination down degrades latency, never the pages (SPEC §1)
        return {"holder": None, "state": "unknown: the coordination backend did not answer"}
    if holder:
        return {"holder": holder, "state": "holds the placement lease"}
    return {"holder": None, "state": "no process holds the placement lease right now"}


@instructor_required
@live_page()
def scheduler(request):
    """Queue depth, loop freshness, leader, the next sessions to place (searchable, sortable, paged) and a
    placement preview."""
    params = clean_params(request.GET)
    form = PlacementPreviewForm(params if "definition" in params else None)
    candidates = leader = None
    # The preview and the leader sit outside the live fragment: polls (htmx) do not recompute them.
    if not request.htmx:
        leader = placement_leader()
        if form.is_bound and form.is_valid():
            candidates = placement_preview(form.cleaned_data["definition"])
    lead = SystemSettings.load().placement_lead_minutes
    pending = LabletSession.objects.select_related("definition").filter(status=S.PENDING)
    listing = list_page(params, SessionSearchFilterSet(params, queryset=pending), QueueListOptions(params))
    waiting = listing["page"].object_list = list(listing["page"].object_list)
    horizon = timezone.now() + timedelta(minutes=lead)
    due = [s for s in waiting if s.timeslot_start <= horizon]
    # Why each due one waits: the placement preview of its definition (one read of the fleet for all of them).
    reasons = placement_reasons(due) if due else {}
    for session in waiting:
        session.why = reasons.get(session.pk, "") if session in due else ""
    context = page_context(
        request,
        "scheduler",
        queue=queue_depth(),
        loops=loop_health(),
        leader=leader,
        **listing,
        waiting=waiting,
        horizon=horizon,
        form=form,
        candidates=candidates,
    )
    return render_live(request, "scheduling/scheduler.html", context)


@instructor_required
@live_page()
def attention(request):
    """Needs attention (SPEC §11): every item, most severe first; live."""
    context = page_context(request, "attention", attention=attention_items())
    return render_live(request, "scheduling/attention.html", context)


@admin_required
def settings_page(request):
    """Edit the SystemSettings singleton (admin); field errors keep the input."""
    current = SystemSettings.load()
    form = SystemSettingsForm(request.POST or None, instance=current)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            # There is no settings service: this singleton has no state machine or history,
            # so the page saves it like the Django admin does, recording who changed it.
            with transaction.atomic():
                SystemSettings.objects.select_for_update().filter(pk=current.pk).first()
                settings_row = form.save(commit=False)
                settings_row.updated_by = actor_name(request.user)
                settings_row.save()
            messages.success(request, "Settings saved.")
            return redirect("scheduling:settings")
        status = 422
    context = page_context(request, "settings", form=form, current=current)
    return render(request, "scheduling/settings.html", context, status=status)


# --- capacity (SPEC §10) ---------------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 960, 240, 28


def _chart(buckets: list[dict], exams: list, begin, end) -> dict:
    """The demand and capacity series (CPU) as SVG polyline points, with the exams and planned launches and
    drains as markers: computed here so the page draws a plain server-rendered `<svg>`."""
    top = max([1] + [max(b["demand"]["cpu"], b["capacity"]["cpu"]) for b in buckets])
    span = (end - begin).total_seconds() or 1
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD

    def x(at) -> float:
        return round(CHART_PAD + inner_w * min(max((at - begin).total_seconds() / span, 0), 1), 1)

    def y(value) -> float:
        return round(CHART_HEIGHT - CHART_PAD - inner_h * value / top, 1)

    def series(key: str) -> str:
        return " ".join(f"{x(b['start'])},{y(b[key]['cpu'])}" for b in buckets)

    events = [
        {"kind": kind, "x": x(e["at"]), "title": f"{kind} {e['count']} × {e['template']} at {e['at']:%a %H:%M} UTC"}
        for b in buckets
        for kind in ("launch", "drain")
        for e in b["planned"][kind]
    ]
    days = [{"x": x(begin + timedelta(days=i)), "label": f"{begin + timedelta(days=i):%a %d}"} for i in range(8)]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "pad": CHART_PAD,
        "bottom": CHART_HEIGHT - CHART_PAD,
        "top_label": top,
        "demand": series("demand"),
        "capacity": series("capacity"),
        "exams": [{"x": x(e.timeslot_start), "name": e.name, "start": e.timeslot_start} for e in exams],
        "events": events,
        "days": days,
    }


@instructor_required
@live_page()
def capacity(request):
    """Booked demand against the fleet for the next 7 days, the exams, the plan and the projected cost."""
    # Imported here: the forecast and the exams are only this page's business.
    from scheduling.forecast import forecast, projected_cost
    from sessions.models import Exam

    now = timezone.now()
    body = forecast(now=now)
    begin, end, buckets = body["from"], body["to"], body["buckets"]
    exams = list(Exam.objects.filter(timeslot_start__gte=begin, timeslot_start__lt=end).order_by("timeslot_start"))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    planned = [{"kind": kind, **e} for b in buckets for kind in ("launch", "drain") for e in b["planned"][kind]]
    context = page_context(
        request,
        "capacity",
        chart=_chart(buckets, exams, begin, end),
        exams=exams,
        planned=planned[:50],
        template=body["template"],
        cost_today=projected_cost(buckets, body["step_minutes"], until=midnight),
        cost_week=projected_cost(buckets, body["step_minutes"]),
        peak=max(buckets, key=lambda b: b["demand"]["cpu"]) if buckets else None,
    )
    return render_live(request, "scheduling/capacity.html", context)
