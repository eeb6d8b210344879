"""Reads of sessions for pages, API, commands and reconcilers (select_related, no N+1)."""

from datetime import timedelta

from django.db.models import Count, Min, Q
from django.utils import timezone

from lcm.metrics import Gauge
from sessions.models import LabletSession
from sessions.states import ACTIVE, SessionStatus
from workers.models import SystemSettings

S = SessionStatus


def session_list(*, statuses=None, owner=None, definition=None, worker=None):
    """Sessions with their definition and worker joined, newest timeslot last."""
    rows = LabletSession.objects.select_related("definition", "worker")
    if statuses:
        rows = rows.filter(status__in=statuses)
    if owner:
        rows = rows.filter(owner=owner)
    if definition:
        rows = rows.filter(definition_id=definition)
    if worker:
        rows = rows.filter(worker_id=worker)
    return rows


def session_detail(pk):
    """One session with everything its detail view shows, in a fixed number of queries."""
    return (
        LabletSession.objects.select_related("definition", "worker", "lab_record")
        .prefetch_related("history", "user_sessions", "grading_sessions", "score_reports__sections")
        .get(pk=pk)
    )


def session_counts_by_status() -> dict[str, int]:
    """`{status: count}` with every status present (zero when none)."""
    counts = dict.fromkeys(SessionStatus.values, 0)
    for row in LabletSession.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def queue_depth() -> dict:
    """Sessions waiting for the loops, counted in one query."""
    lead = SystemSettings.load().placement_lead_minutes
    horizon = timezone.now() + timedelta(minutes=lead)
    pending = Q(status=S.PENDING)
    depth = LabletSession.objects.aggregate(
        pending=Count("id", filter=pending),
        eligible=Count("id", filter=pending & Q(timeslot_start__lte=horizon)),
        scheduled=Count("id", filter=Q(status=S.SCHEDULED)),
        instantiating=Count("id", filter=Q(status=S.INSTANTIATING)),
        backing_off=Count("id", filter=Q(status__in=ACTIVE, attempts__gt=0)),
        oldest_eligible=Min("created_at", filter=pending & Q(timeslot_start__lte=horizon)),
    )
    depth["lead_minutes"] = lead
    return depth


def session_gauges() -> list[Gauge]:
    """Scrape-time metrics (SPEC §11): sessions by status and the placement queue's depth (two queries)."""
    by_status = Gauge("lcm_sessions", "Sessions by status.", ("status",))
    by_status.samples = {(status,): n for status, n in session_counts_by_status().items()}
    depth = queue_depth()
    queue = Gauge(
        "lcm_queue_depth",
        "Sessions waiting for the loops: pending, eligible (pending within the placement lead), scheduled, "
        "instantiating, backing_off (retrying after a failed pass).",
        ("queue",),
    )
    names = ("pending", "eligible", "scheduled", "instantiating", "backing_off")
    queue.samples = {(name,): depth[name] for name in names}
    return [by_status, queue]


def exam_scopes(scopes: set[str]) -> set[str]:
    """The live-page scopes of the exams whose sessions are among `scopes` (`lcm.live` expander; one query)."""
    ids = [s.split(":", 1)[1] for s in scopes if s.startswith("session:")]
    if not ids:
        return set()
    exams = LabletSession.objects.filter(pk__in=ids, exam__isnull=False).values_list("exam_id", flat=True).distinct()
    return {f"exam:{exam_id}" for exam_id in exams}
