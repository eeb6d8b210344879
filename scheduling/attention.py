"""Needs attention (SPEC §11): what a person should look at now, each item `{kind, severity, object, reason, since}`.

Read-only. One query per kind, whatever the number of sessions and workers (the placement preview of the due
sessions is computed once per definition from one read of every worker's capacity):
- `unplaceable`: a PENDING session due for placement that no worker takes, with the placement preview's reason
  (and the autoscaler's latest WAIT reason for it);
- `drift`: a READY or RUNNING session whose lab is gone or not running in CML (flagged by the lablet reconciler);
- `session_failed`: a session that ended FAILED lately; `grading_faulted`: a grading that FAULTED lately;
- `worker_failed` / `worker_unreachable`: a FAILED worker, or a RUNNING/DRAINING one whose CML does not answer;
- `drain_deadline`: a session on a draining worker booked past the drain deadline (it will be cut short);
- `stale_loop`: a control loop whose heartbeat is stale, failed or missing.
`waiting_reason` says why one session is waiting, for its page.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from lcm.loops import loop_health
from scheduling.capacity import Demand
from scheduling.placement import preview
from scheduling.selectors import reusable_labs_by_definition, worker_capacities
from sessions.models import LabletSession
from sessions.states import CAPACITY_HOLDING, EndReason, SessionStatus
from workers.models import CMLWorker, ScaleAction, ScaleDecision, SystemSettings
from workers.states import WorkerStatus

S = SessionStatus
W = WorkerStatus
SEVERITIES = ("critical", "error", "warning")
GRADING_FAULTED = "FAULTED"  # grading.states.GradingStatus.FAULTED
# FAILED sessions and FAULTED gradings are listed this long after they happened.
RECENT = timedelta(hours=24)
# The autoscaler's WAIT decisions this recent explain a waiting session.
WAIT_WINDOW = timedelta(minutes=30)
# At most this many items of one kind (the list stays a page, however bad the day).
PER_KIND = 200
# Sessions a drain deadline can cut short: those still on their worker and not already being torn down.
CUT_SHORT = sorted(CAPACITY_HOLDING - {S.STOPPING})
# How many rejected workers a placement reason names.
NAMED_WORKERS = 4


@dataclass(frozen=True)
class Item:
    """One thing that needs a person."""

    kind: str
    severity: str
    object: dict
    reason: str
    since: datetime | None

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "object": self.object,
            "reason": self.reason,
            "since": self.since,
        }


def _session_ref(session) -> dict:
    return {
        "type": "session",
        "id": str(session.pk),
        "name": session.owner,
        "url": reverse("sessions:session_detail", args=[session.pk]),
    }


def _worker_ref(worker) -> dict:
    return {
        "type": "worker",
        "id": str(worker.pk),
        "name": worker.name,
        "url": reverse("workers:worker_detail", args=[worker.pk]),
    }


def attention_items(now=None) -> list[Item]:
    """Everything that needs attention now, most severe first, then oldest first."""
    now = now or timezone.now()
    lead = timedelta(minutes=SystemSettings.load().placement_lead_minutes)
    items = [
        *_unplaceable(now, lead),
        *_drifted(),
        *_failed_sessions(now),
        *_faulted_gradings(now),
        *_troubled_workers(),
        *_drain_cuts(),
        *_stale_loops(),
    ]
    oldest = datetime.min.replace(tzinfo=now.tzinfo)
    return sorted(items, key=lambda i: (SEVERITIES.index(i.severity), i.since or oldest, i.kind))


# --- placement ------------------------------------------------------------------------------------------------


def placement_reasons(sessions) -> dict:
    """`{session id: why no worker takes it now}` (None when one does), from the placement preview: every
    worker's capacity read once, judged once per definition (and per worker a requeue excluded)."""
    sessions = list(sessions)
    capacities = list(worker_capacities().values())
    reusable = reusable_labs_by_definition({s.definition_id: s.definition for s in sessions}.values())
    judged: dict = {}
    reasons = {}
    for session in sessions:
        definition = session.definition
        excluded = frozenset({str(session.excluded_worker_id)}) if session.excluded_worker_id else frozenset()
        key = (definition.pk, excluded)
        if key not in judged:
            candidates = preview(
                capacities,
                Demand.of(definition),
                cml_version_min=definition.cml_version_min,
                cml_version_max=definition.cml_version_max,
                reusable_on=reusable.get(definition.pk, frozenset()),
                excluded=excluded,
            )
            judged[key] = _why_rejected(candidates)
        reasons[session.pk] = judged[key]
    return reasons


def _why_rejected(candidates) -> str | None:
    if not candidates:
        return "there are no workers"
    if candidates[0].reason is None:
        return None
    named = "; ".join(f"{c.name}: {c.reason}" for c in candidates[:NAMED_WORKERS])
    more = len(candidates) - NAMED_WORKERS
    return f"no worker fits ({named}{f'; and {more} more' if more > 0 else ''})"


def _recent_waits(now) -> dict[str, str]:
    """`{session id: the autoscaler's latest WAIT reason}` over the last WAIT_WINDOW (one query)."""
    found: dict[str, str] = {}
    rows = ScaleDecision.objects.filter(action=ScaleAction.WAIT, at__gte=now - WAIT_WINDOW).order_by("-at", "-id")
    for sessions, reason in rows.values_list("sessions", "reason")[:PER_KIND]:
        for session_id in sessions or ():
            found.setdefault(str(session_id), reason)
    return found


def _unplaceable(now, lead) -> list[Item]:
    rows = list(
        LabletSession.objects.select_related("definition")
        .filter(status=S.PENDING, timeslot_start__lte=now + lead, timeslot_end__gt=now)
        .order_by("timeslot_start", "created_at")[:PER_KIND]
    )
    if not rows:
        return []
    reasons = placement_reasons(rows)
    waits = _recent_waits(now)
    items = []
    for session in rows:
        reason = reasons.get(session.pk)
        if reason is None:
            continue  # a worker takes it: the next placement tick places it
        wait = waits.get(str(session.pk))
        items.append(
            Item(
                "unplaceable",
                "warning",
                _session_ref(session),
                f"due but not placeable: {reason}" + (f"; autoscaler: {wait}" if wait else ""),
                max(session.created_at, session.timeslot_start - lead),
            )
        )
    return items


def waiting_reason(session, now=None) -> str:
    """Why a session that is not on its way yet is waiting (its page), or ""."""
    now = now or timezone.now()
    if session.status == S.SCHEDULED:
        return _boot_wait(session, now)
    if session.status != S.PENDING:
        return ""
    lead = timedelta(minutes=SystemSettings.load().placement_lead_minutes)
    due_at = session.timeslot_start - lead
    if now < due_at:
        return (
            f"Not placed yet: placement starts {int(lead.total_seconds() // 60)} min before the timeslot, "
            f"at {due_at:%Y-%m-%d %H:%M} UTC."
        )
    reason = placement_reasons([session])[session.pk]
    if reason is None:
        return "Not placed yet: a worker fits, so the scheduler places it on its next tick."
    wait = _recent_waits(now).get(str(session.pk))
    return f"Not placed yet: {reason}." + (f" Autoscaler: {wait}." if wait else "")


def _boot_wait(session, now) -> str:
    minutes = session.definition.boot_lead_minutes
    if minutes is None:
        minutes = SystemSettings.load().boot_lead_minutes
    starts = session.timeslot_start - timedelta(minutes=minutes)
    if now >= starts:
        return ""
    return f"Placed; the lab is brought up {minutes} min before the timeslot, at {starts:%Y-%m-%d %H:%M} UTC."


# --- sessions, gradings, workers, loops -----------------------------------------------------------------------


def _drifted() -> list[Item]:
    rows = LabletSession.objects.filter(status__in=[S.READY, S.RUNNING], degraded_at__isnull=False).order_by(
        "degraded_at"
    )[:PER_KIND]
    return [
        Item(
            "drift",
            "critical",
            _session_ref(s),
            f"{s.status} but degraded: {s.degraded_reason}; "
            + ("a fresh lab is coming up" if s.reinstantiate_requested_at else "Re-instantiate brings up a fresh lab"),
            s.degraded_at,
        )
        for s in rows
    ]


def _failed_sessions(now) -> list[Item]:
    rows = LabletSession.objects.filter(end_reason=EndReason.FAILED, ended_at__gte=now - RECENT).order_by("-ended_at")
    return [
        Item(
            "session_failed",
            "error",
            _session_ref(s),
            f"{s.status} (FAILED): {s.end_reason_detail or 'no detail'}",
            s.ended_at,
        )
        for s in rows[:PER_KIND]
    ]


def _faulted_gradings(now) -> list[Item]:
    # Read through the session's reverse relation: the sessions app's pages show this list, and sessions never
    # import the grading app (`.importlinter`).
    rows = (
        LabletSession.objects.filter(
            grading_sessions__status=GRADING_FAULTED, grading_sessions__updated_at__gte=now - RECENT
        )
        .order_by("-grading_sessions__updated_at")
        .values_list("pk", "owner", "grading_sessions__error_message", "grading_sessions__updated_at")
    )
    return [
        Item(
            "grading_faulted",
            "error",
            _session_ref(LabletSession(pk=pk, owner=owner)),
            f"grading FAULTED: {error or 'no detail'}",
            at,
        )
        for pk, owner, error, at in rows[:PER_KIND]
    ]


def _troubled_workers() -> list[Item]:
    rows = CMLWorker.objects.filter(
        Q(status=W.FAILED) | Q(status__in=[W.RUNNING, W.DRAINING], service_status="UNREACHABLE")
    ).order_by("name")
    items = []
    for worker in rows[:PER_KIND]:
        if worker.status == W.FAILED:
            items.append(
                Item(
                    "worker_failed",
                    "critical",
                    _worker_ref(worker),
                    f"worker FAILED: {worker.last_error or 'no detail'}",
                    worker.updated_at,
                )
            )
        else:
            items.append(
                Item(
                    "worker_unreachable",
                    "error",
                    _worker_ref(worker),
                    f"{worker.status} but its CML does not answer",
                    worker.metrics_collected_at,
                )
            )
    return items


def _drain_cuts() -> list[Item]:
    rows = (
        LabletSession.objects.select_related("worker")
        .filter(status__in=CUT_SHORT, worker__status=W.DRAINING, worker__drain_deadline__lt=F("timeslot_end"))
        .order_by("worker__drain_deadline", "timeslot_end")
    )
    return [
        Item(
            "drain_deadline",
            "warning",
            _session_ref(s),
            f"worker {s.worker.name} drains by {s.worker.drain_deadline:%Y-%m-%d %H:%M} UTC, before this session's "
            f"end at {s.timeslot_end:%Y-%m-%d %H:%M} UTC: it will be cut short",
            s.worker.drain_started_at,
        )
        for s in rows[:PER_KIND]
    ]


def _stale_loops() -> list[Item]:
    return [
        Item(
            "stale_loop",
            "error" if row["last_tick"] else "warning",
            {"type": "loop", "id": row["name"], "name": row["name"], "url": reverse("scheduling:scheduler")},
            f"control loop {row['name']}: {row['state']}",
            row["last_tick"],
        )
        for row in loop_health()
        if row["state"] != "ok"
    ]
