"""Instructor pages (the full HTMX set grows in its own issue): dashboard, session list and detail."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import render

from scheduling.selectors import worker_capacities
from sessions import selectors
from sessions.states import BADGE_COLOURS, SessionStatus


@login_required
def dashboard(request):
    """Counts by state, fleet capacity and the most recent sessions."""
    capacities = sorted(worker_capacities().values(), key=lambda c: c.name)
    return render(
        request,
        "sessions/dashboard.html",
        {
            "counts": selectors.session_counts_by_status(),
            "capacities": capacities,
            "recent": selectors.session_list().order_by("-created_at")[:10],
            "colours": BADGE_COLOURS,
        },
    )


@login_required
def session_list(request):
    """All sessions, optionally filtered by status (`?status=RUNNING,READY`) and owner."""
    raw = request.GET.get("status", "")
    statuses = [s for s in (part.strip().upper() for part in raw.split(",")) if s in SessionStatus.values]
    owner = request.GET.get("owner", "").strip()[:200] or None
    rows = selectors.session_list(statuses=statuses or None, owner=owner).order_by("-timeslot_start")[:500]
    return render(
        request,
        "sessions/session_list.html",
        {"sessions": rows, "statuses": SessionStatus.values, "selected": statuses, "owner": owner or ""},
    )


@login_required
def session_detail(request, pk):
    """One session: timeslot, worker, ports, children and its status timeline."""
    try:
        session = selectors.session_detail(pk)
    except (selectors.LabletSession.DoesNotExist, ValidationError):
        raise Http404("No such session") from None
    return render(request, "sessions/session_detail.html", {"session": session})
