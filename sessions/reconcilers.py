"""The lablet reconciler (SPEC §3.3–3.5): one function of one session id, level-triggered.

Desired state by status:
- PENDING/SCHEDULED/INSTANTIATING/READY past `timeslot_end`: EXPIRED (the session never ran).
- SCHEDULED: INSTANTIATING from `timeslot_start − boot_lead`; back to PENDING if its worker left RUNNING.
- On a worker that went away (INSTANTIATING to GRADING): TERMINATED (FAILED) once the worker is TERMINATED,
  EXPIRED once a DRAINING worker's drain deadline passed.
- INSTANTIATING: its lab booted on the worker (a reused wiped one, else imported with ports rewritten:
  the lab reconciler, `workers.labs`), an LDS session with devices and a login URL → READY.
- READY/RUNNING: the lab still running in CML, checked once per `LCM_DRIFT_CHECK_SECONDS` (a missing or stopped
  lab flags the session degraded), and a fresh lab with the same ports when one is asked for (`sessions.drift`).
- RUNNING at `timeslot_end`: COLLECTING (the definition grades) or STOPPING.
- COLLECTING: GRADING (grading enabled) or STOPPING; GRADING: the grading app's step
  (`grading.reconcilers.on_session_grading`, registered with `register_status_handler`).
- STOPPING / EXPIRED / TERMINATED with cleanup pending: the wipe gates passed (the grading app's evidence,
  `register_wipe_gate`), lab stopped and wiped (deleted when reuse
  is off or the session FAILED: `workers.labs.tear_down`), LDS released; then STOPPED → ARCHIVED,
  or cleanup finished.
This reconciler writes the session, its user sessions and the LDS; the lab record, its ports and CML
belong to the lab reconciler, which it asks for what it wants of the lab.
Invariants: every external resource is recorded before or right after it is made (the lab
record and its ports exist before the import; an import is titled `labs.lab_title(record id)` so a
crash between import and commit is found again by title), so a pass may crash anywhere and
the next pass finishes the job without leaking a lab, port or LDS session. A failing pass
backs off on the row; after `LCM_MAX_RECONCILE_ATTEMPTS` the session is TERMINATED (FAILED)
and cleaned up.
"""

import contextlib
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import (
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    Func,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from lcm import coordination, http, loops
from lcm.fsm import InvalidTransition
from lcm.reconcile import Result, backoff
from sessions import candidate, drift
from sessions.candidate import ACTOR, USER_SESSION_DONE
from sessions.labyaml import rewritten_topology
from sessions.models import LabletSession, UserSession
from sessions.services import (
    session_attach_lab,
    session_cleanup_finished,
    session_record_failure,
    session_terminate,
    session_transition,
)
from sessions.states import EndReason, GradingMode, SessionStatus, UserSessionStatus
from workers import labs
from workers.clients.cml import cml_client_for
from workers.models import LabRecord, SystemSettings
from workers.states import LabStatus, WorkerStatus

logger = logging.getLogger("lcm.sessions.reconcilers")

S = SessionStatus
L = LabStatus
POLL_SECONDS = 1.0


# --- which sessions need work (one query per tick) ------------------------------------------


class _Minutes(Func):
    """A whole number of minutes as a duration in SQL (Django cannot multiply a duration by a column portably)."""

    output_field = DurationField()
    template = "(%(expressions)s * INTERVAL '1 minute')"

    def as_sqlite(self, compiler, connection, **extra):
        # SQLite holds durations as microseconds.
        return self.as_sql(compiler, connection, template="(%(expressions)s * 60000000)", **extra)


# Statuses whose change (projected into etcd, or announced in-process) calls for a pass at once.
# Left out: PENDING (placement's, not this reconciler's), READY and RUNNING (nothing to do until the
# timeslot ends, which the ticks catch) and INSTANTIATING (only this reconciler enters it, and the
# pass that does carries on to READY itself). ARCHIVED and clean ends remove the keys.
WAKE_ON_STATUS = frozenset({S.SCHEDULED, S.COLLECTING, S.GRADING, S.STOPPING, S.STOPPED, S.EXPIRED, S.TERMINATED})


def wake(session_id, status: str) -> None:
    """React to a session's new status at once (the watcher on an etcd change, or the in-process
    projection): a pass for a status in WAKE_ON_STATUS, a placement tick for a new PENDING one."""
    if status == S.PENDING:
        loops.kick("placement")
    elif status in WAKE_ON_STATUS:
        loops.enqueue("lablets", session_id)


def project_sessions(ids, *, in_process: bool) -> None:
    """The projector of changed sessions (`lcm.projection`): their keys in coordination, read in one query;
    in-process (no etcd, so no watcher), each one woken as the watcher would."""
    rows = list(
        LabletSession.objects.filter(pk__in=ids).values_list("pk", "status", "allocated_ports", "cleanup_pending")
    )
    coordination.project_sessions((pk, status, ports, not pending) for pk, status, ports, pending in rows)
    if in_process:
        for pk, status, _ports, _pending in rows:
            wake(str(pk), status)


# A user session whose LDS end is not the session's (an extension not yet sent to LDS).
_lds_end_behind = (
    UserSession.objects.filter(
        lablet_session=OuterRef("pk"),
        status__in=[UserSessionStatus.PROVISIONED, UserSessionStatus.ACTIVE, UserSessionStatus.PAUSED],
    )
    .exclude(lds_session_id="")
    .exclude(lds_ends_at=OuterRef("timeslot_end"))
)


def sessions_needing_work(now=None) -> list:
    """Ids of sessions the reconciler has something to do for now, found with one query.

    Idle sessions (waiting for their boot lead, a candidate or the end of their timeslot) are
    left out, so a tick is one query however many sessions there are: a SCHEDULED session's
    boot lead (its definition's, else the global one, read in the same query) is applied in
    SQL, and an EXPIRED or TERMINATED session is returned only while its teardown is pending.
    """
    now = now or timezone.now()
    global_lead = Coalesce(
        Subquery(SystemSettings.objects.filter(pk=1).values("boot_lead_minutes")[:1]),
        Value(SystemSettings._meta.get_field("boot_lead_minutes").get_default()),
    )
    boot_lead = _Minutes(Coalesce(F("definition__boot_lead_minutes"), global_lead))
    boots_by = ExpressionWrapper(Value(now) + boot_lead, output_field=DateTimeField())
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    needs = (
        Q(status__in=[S.INSTANTIATING, S.COLLECTING, S.GRADING, S.STOPPING])
        | Q(Q(hold_until__isnull=True) | Q(hold_until__lte=now), status=S.STOPPED)
        | Q(status__in=[S.EXPIRED, S.TERMINATED], cleanup_pending=True)
        | Q(status__in=[S.PENDING, S.READY, S.RUNNING], timeslot_end__lte=now)
        | Q(status=S.SCHEDULED, timeslot_start__lte=boots_by)
        | Q(status=S.SCHEDULED, worker__status__in=[WorkerStatus.DRAINING, WorkerStatus.STOPPING])
        | Q(status__in=[S.READY, S.RUNNING], worker__status=WorkerStatus.TERMINATED)
        | Q(status__in=[S.READY, S.RUNNING], worker__status=WorkerStatus.DRAINING, worker__drain_deadline__lte=now)
        | Q(Exists(_lds_end_behind), status__in=[S.READY, S.RUNNING])
        | Q(status__in=[S.READY, S.RUNNING], reinstantiate_requested_at__isnull=False)
    )
    interval = drift.check_interval()
    if interval is not None:  # lab drift (SPEC §11): a READY/RUNNING session's lab checked once per interval
        checked_long_ago = Q(lab_checked_at__isnull=True) | Q(lab_checked_at__lte=now - interval)
        needs |= Q(checked_long_ago, status__in=[S.READY, S.RUNNING], lab_record__isnull=False)
    return list(LabletSession.objects.filter(needs & due).order_by("timeslot_start").values_list("pk", flat=True))


# --- the reconciler -----------------------------------------------------------------------


def reconcile_session(session_id) -> Result:
    """One pass for one session: do the next step its status calls for."""
    session = LabletSession.objects.select_related("definition", "worker", "lab_record").filter(pk=session_id).first()
    if session is None:
        return Result.done("gone")
    now = timezone.now()
    if session.next_attempt_at and session.next_attempt_at > now:
        return Result.requeue((session.next_attempt_at - now).total_seconds(), "backing off")
    left = _worker_left(session, now)
    if left is not None:
        return left
    handler = _HANDLERS.get(session.status)
    if handler is None:
        return Result.done("nothing to do")
    return handler(session, now)


# Statuses a session leaves by itself when its worker goes away (SCHEDULED goes back to PENDING instead,
# in its own step; the teardown statuses finish what they started).
_ON_A_WORKER = frozenset({S.INSTANTIATING, S.READY, S.RUNNING, S.COLLECTING, S.GRADING})


def _worker_left(session, now) -> Result | None:
    """The session acts on its own row when its worker goes away (the worker reconciler writes no session):
    TERMINATED (FAILED) once the worker is terminated, EXPIRED once a draining worker's deadline passed."""
    worker = session.worker
    if worker is None or session.status not in _ON_A_WORKER:
        return None
    if worker.status == WorkerStatus.TERMINATED:
        session_terminate(
            session, actor=ACTOR, reason=f"worker {worker.name} was terminated", end_reason=EndReason.FAILED
        )
        return Result.requeue(0, "worker terminated")
    if worker.status == WorkerStatus.DRAINING and worker.drain_deadline and now >= worker.drain_deadline:
        return expire(session, f"worker {worker.name} reached its drain deadline")
    return None


def record_failure(session_id, exc) -> float | None:
    """`on_error` hook: back off on the row; past the attempt limit, terminate as FAILED (cleanup follows)."""
    session = LabletSession.objects.filter(pk=session_id).first()
    if session is None:
        return None
    error = f"{exc.__class__.__name__}: {exc}"
    attempts = session.attempts + 1
    if attempts >= settings.LCM_MAX_RECONCILE_ATTEMPTS and session.status not in (S.TERMINATED, S.ARCHIVED):
        try:
            session_terminate(
                session,
                actor=ACTOR,
                reason=f"gave up after {attempts} attempts: {error}"[:2000],
                end_reason=EndReason.FAILED,
            )
            return 0.0
        except InvalidTransition:
            pass
    delay = backoff(attempts)
    session_record_failure(session, error, retry_in=delay)
    return delay.total_seconds()


def _expired(session, now) -> bool:
    return now >= session.timeslot_end


def expire(session, reason="the timeslot ended before the session ran") -> Result:
    session_transition(session, S.EXPIRED, actor=ACTOR, reason=reason)
    return Result.requeue(0, "expired")


def _boot_lead(session) -> timedelta:
    minutes = session.definition.boot_lead_minutes
    if minutes is None:
        minutes = SystemSettings.load().boot_lead_minutes
    return timedelta(minutes=minutes)


def _on_pending(session, now) -> Result:
    if _expired(session, now):
        return expire(session)
    return Result.done("waiting for placement")


def _on_scheduled(session, now) -> Result:
    if _expired(session, now):
        return expire(session)
    if session.worker is None or session.worker.status != WorkerStatus.RUNNING:
        session_transition(session, S.PENDING, actor=ACTOR, reason="worker no longer RUNNING before instantiation")
        return Result.done("requeued")
    if now < session.timeslot_start:  # a boot lead is never negative: a slot already begun needs no lookup
        start_at = session.timeslot_start - _boot_lead(session)
        if now < start_at:
            return Result.requeue((start_at - now).total_seconds(), "waiting for boot lead")
    definition, worker = session.definition, session.worker
    session_transition(
        session, S.INSTANTIATING, actor=ACTOR, reason="boot lead reached",
        prepare_lab=lambda locked: _prepare_lab(locked, definition, worker),
    )  # fmt: skip
    return Result.requeue(0, "instantiating")


def _attached(session, lab, *, ports=None) -> None:
    """Bind the session to `lab` (`session_attach_lab`) and keep this pass's copy of the session in step."""
    attached = session_attach_lab(session, lab, ports=ports)
    session.lab_record, session.cml_lab_id, session.allocated_ports = lab, attached.cml_lab_id, attached.allocated_ports


def _cml(session):
    return cml_client_for(session.worker)


# --- instantiation ------------------------------------------------------------------------


def _prepare_lab(locked, definition, worker) -> tuple[LabRecord, dict]:
    """`session_transition`'s step into INSTANTIATING: the session's lab and its ports (`labs.prepare`)."""
    return labs.prepare(locked, definition, worker, actor=ACTOR)


def _session_lab(session, cml) -> LabRecord:
    """The session's lab record, attached to it: the one it holds, else a wiped lab still in CML, else a new
    record with fresh ports."""
    lab = session.lab_record
    bound_here = lab is not None and lab.active_session_id == session.pk
    if (
        lab is not None
        and lab.status == L.WIPED
        and not labs.still_reusable(lab, cml, actor=ACTOR, started_by_holder=bound_here)
    ):
        lab = None  # a wiped lab that did not survive in CML: another, or a fresh import, below
    if lab is not None and lab.status not in (L.DELETED, L.ORPHANED):
        return lab
    lab = labs.claim_reusable(session, session.definition, session.worker, cml, actor=ACTOR)
    if lab is not None:
        _attached(session, lab, ports=lab.ports)
        return lab
    with transaction.atomic():
        lab, ports = labs.new_lab(session, session.definition, session.worker, actor=ACTOR)
        _attached(session, lab, ports=ports)
    return lab


def _copy_cml_lab_id(session, lab) -> None:
    """The session's copy of its lab's CML id (for display): one column, written without the row lock."""
    if lab.cml_lab_id and session.cml_lab_id != lab.cml_lab_id:
        LabletSession.objects.filter(pk=session.pk).update(cml_lab_id=lab.cml_lab_id)
        session.cml_lab_id = lab.cml_lab_id


def _on_instantiating(session, now) -> Result:
    """Desired: the session's lab booted (the lab reconciler's `labs.boot`), then its LDS session → READY."""
    if _expired(session, now):
        return expire(session)
    cml = _cml(session)
    lab = _session_lab(session, cml)

    def topology() -> dict:
        ports = session.allocated_ports if session.lab_record_id == lab.pk and session.allocated_ports else lab.ports
        return rewritten_topology(session.definition.lab_yaml, ports)

    lab = labs.boot(lab, cml, session.worker, topology=topology, actor=ACTOR)
    _copy_cml_lab_id(session, lab)
    if lab.status != L.BOOTED:
        return Result.requeue(POLL_SECONDS, "waiting for nodes to boot")
    user_session, provisioned = candidate.ensure_lds_session(session)
    session_transition(
        session, S.READY, actor=ACTOR, reason="lab booted, login URL issued", provisioned=provisioned
    )  # fmt: skip
    logger.info("session %s READY (LDS session %s)", session.pk, user_session.lds_session_id)
    return Result.done("ready")


# --- running, collecting, grading ------------------------------------------------------------


def _on_ready(session, now) -> Result:
    if _expired(session, now):
        return expire(session, "the candidate never started")
    candidate.converge_lds_end(session)
    drifting = drift.watch(session, now)
    if drifting is not None:
        return drifting
    return Result.requeue((session.timeslot_end - now).total_seconds(), "waiting for the candidate")


def _on_running(session, now) -> Result:
    if not _expired(session, now):
        candidate.converge_lds_end(session)
        drifting = drift.watch(session, now)
        if drifting is not None:
            return drifting
        return Result.requeue((session.timeslot_end - now).total_seconds(), "running")
    target = S.COLLECTING if session.definition.grading_enabled else S.STOPPING
    session_transition(session, target, actor=ACTOR, reason="time is up", expected_status=S.RUNNING)
    return Result.requeue(0, "time is up")


def grading_timed_out(session, now) -> bool:
    since = session.status_changed_at or session.updated_at
    return now - since > timedelta(minutes=SystemSettings.load().grading_timeout_minutes)


def _on_collecting(session, now) -> Result:
    candidate.end_candidate_access(session, "collecting")
    mode = session.definition.grading_mode
    if mode == GradingMode.MANUAL:  # SPEC §3.4: an instructor starts or skips grading; no timeout meanwhile
        return Result.done("waiting for an instructor: Start Grading or Skip Grading")
    if grading_timed_out(session, now):
        return expire(session, "grading timed out while collecting")
    if mode == GradingMode.NONE:
        session_transition(session, S.STOPPING, actor=ACTOR, reason="the definition does not grade")
        return Result.requeue(0, "skip grading")
    session_transition(session, S.GRADING, actor=ACTOR, reason="collected; grading", expected_status=S.COLLECTING)
    return Result.requeue(0, "grading")


# --- teardown ---------------------------------------------------------------------------------


def _teardown(session, *, delete_lab: bool, keep_lab: bool = False) -> Result | None:
    """Desired: the lab wiped for reuse (deleted when `delete_lab`, reuse is off, or it was never imported; only
    stopped and kept when `keep_lab`) and the LDS session released; None when nothing is left."""
    lab = session.lab_record
    if lab is not None and lab.active_session_id == session.pk:
        waiting = _gates_waiting(session)  # e.g. the candidate's evidence, recorded before the lab goes
        if waiting is not None:
            return Result.requeue(POLL_SECONDS, waiting)
        if keep_lab:
            waiting = labs.stop(lab, lambda: _cml(session), actor=ACTOR)
        else:
            delete = delete_lab or not session.definition.lab_reuse_enabled
            waiting = labs.tear_down(lab, lambda: _cml(session), session.worker, delete=delete, actor=ACTOR)
        if waiting is not None:
            return Result.requeue(POLL_SECONDS, waiting)
    for step in _TEARDOWN_STEPS:
        waiting = step(session)
        if waiting is not None:
            return Result.requeue(POLL_SECONDS, waiting)
    for user_session in session.user_sessions.all():
        if user_session.status not in USER_SESSION_DONE:
            candidate.release_lds(user_session)
        elif user_session.lds_session_id:
            # A candidate who finished (ENDED by the LDS event) still leaves the LDS session to release;
            # releasing twice is harmless, and this runs once, as the teardown ends.
            with contextlib.suppress(http.NotFound):
                candidate.lds().release(user_session.lds_session_id)
    return None


def _review_hold(session) -> timedelta | None:
    """How long a graded session's stopped lab is kept for an instructor to inspect (SPEC §3.4), else None."""
    hours = session.definition.hold_for_review_hours
    graded = session.end_reason == EndReason.COMPLETED and session.grading_sessions.exists()
    return timedelta(hours=hours) if hours and graded else None


def _on_stopping(session, now) -> Result:
    candidate.end_candidate_access(session, "stopping")
    hold = _review_hold(session)
    result = _teardown(session, delete_lab=False, keep_lab=hold is not None)
    if result is not None:
        return result
    if hold is not None:
        session_transition(
            session, S.STOPPED, actor=ACTOR, reason=f"lab stopped and kept {hold} for review, LDS released",
            hold_until=now + hold,
        )  # fmt: skip
        return Result.requeue(hold.total_seconds(), "held for review")
    session_transition(session, S.STOPPED, actor=ACTOR, reason="lab stopped and wiped, LDS released")
    return Result.requeue(0, "stopped")


def _on_stopped(session, now) -> Result:
    if session.hold_until is not None:
        if now < session.hold_until:
            return Result.requeue((session.hold_until - now).total_seconds(), "held for review")
        result = _teardown(session, delete_lab=False)  # the review is over: the kept lab is wiped now
        if result is not None:
            return result
    session_transition(session, S.ARCHIVED, actor=ACTOR, reason="archived")
    return Result.done("archived")


def _holds_resources(session) -> bool:
    lab = session.lab_record
    lab_held = lab is not None and lab.active_session_id == session.pk and lab.status != L.DELETED
    return lab_held or session.user_sessions.exclude(status__in=USER_SESSION_DONE).exists()


def _on_expired(session, now) -> Result:
    if _holds_resources(session):
        session_transition(session, S.STOPPING, actor=ACTOR, reason="expired: tearing down")
        return Result.requeue(0, "tearing down")
    if session.cleanup_pending:
        session_cleanup_finished(session, actor=ACTOR)
    return Result.done("expired and clean")


def _on_terminated(session, now) -> Result:
    if not session.cleanup_pending:
        return Result.done("nothing to clean")
    result = _teardown(session, delete_lab=session.end_reason == EndReason.FAILED)
    if result is not None:
        return result
    session_cleanup_finished(session, actor=ACTOR)
    return Result.done("cleaned up")


_TEARDOWN_STEPS: list = []
_WIPE_GATES: list = []


def _gates_waiting(session) -> str | None:
    """What the first wipe gate that holds the lab waits for, None when every gate lets it go."""
    for gate in _WIPE_GATES:
        waiting = gate(session)
        if waiting is not None:
            return waiting
    return None


def register_wipe_gate(gate) -> None:
    """`gate(session) -> str | None` is consulted before the lab a session holds is stopped, wiped or deleted (an
    app that depends on sessions registers one in `AppConfig.ready()`: the grading app records the candidate's
    evidence, SPEC §9); it returns what the lab waits for, None when it may go. Gates are idempotent and give up
    by themselves (the evidence after its timeout), so a teardown never waits for ever."""
    if gate not in _WIPE_GATES:
        _WIPE_GATES.append(gate)


def register_teardown_step(step) -> None:
    """`step(session) -> str | None` runs in every teardown, after the lab's (an app that depends on sessions
    registers one in `AppConfig.ready()`: the grading app releases the engine sessions of gradings closed by
    hand); it returns what it waits for, None when done. Steps are idempotent, like every reconcile step."""
    if step not in _TEARDOWN_STEPS:
        _TEARDOWN_STEPS.append(step)


def register_status_handler(status: str, handler) -> None:
    """`handler(session, now) -> Result` does the step of `status` (an app that depends on sessions registers
    one in `AppConfig.ready()`: the grading app's GRADING step)."""
    _HANDLERS[status] = handler


_HANDLERS = {
    S.PENDING: _on_pending,
    S.SCHEDULED: _on_scheduled,
    S.INSTANTIATING: _on_instantiating,
    S.READY: _on_ready,
    S.RUNNING: _on_running,
    S.COLLECTING: _on_collecting,
    S.STOPPING: _on_stopping,
    S.STOPPED: _on_stopped,
    S.EXPIRED: _on_expired,
    S.TERMINATED: _on_terminated,
}
