"""Writers for lablet sessions and their user sessions: every status change of a session takes
`session_transition` (or one of the services here built on it).

Each service takes the row lock, runs the FSM transition with the step SPEC §2.2 ties to the target,
writes the history row with actor and reason (`lcm.fsm.record_change`), and leaves side effects to
`transaction.on_commit` (`lcm.events`). UI, REST, admin actions, commands, the webhook and the
reconcilers all call these. Booking and extending a timeslot are in `sessions.booking`, definitions in
`sessions.definitions`, a scheduler tick's placements in `sessions.batch`.
"""

import logging
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone

from lcm import metrics
from lcm.events import publish_change
from lcm.fsm import (
    InvalidTransition,
    actor_name,
    allowed_targets,
    apply_transition,
    changed_fields,
    normalize_status,
    record_change,
    snapshot,
)
from scheduling.capacity import Demand, rejection_reason
from scheduling.selectors import worker_capacities
from sessions.models import LabletSession, SessionStatusChange, UserSession
from sessions.states import (
    SESSION_TRANSITIONS,
    USER_SESSION_TRANSITIONS,
    EndReason,
    SessionStatus,
    UserSessionStatus,
)
from workers.models import CMLWorker
from workers.states import LabStatus as L
from workers.states import WorkerStatus

logger = logging.getLogger("lcm.sessions.services")

S = SessionStatus


def lock_session(session) -> LabletSession:
    """The session's row, locked. Only that row: its definition (loaded when a step needs it) stays
    unlocked, or every session of a definition would queue behind each other's transitions."""
    pk = session.pk if isinstance(session, LabletSession) else session
    return LabletSession.objects.select_for_update().get(pk=pk)


def record_session_note(locked, *, actor, reason: str) -> None:
    """A row on the session's timeline that changes no status (from and to its current one): a teardown
    finished, a timeslot extended, a retry nudged, a score report stored. Inside the caller's transaction."""
    record_change(
        SessionStatusChange,
        session_id=locked.pk,
        entity=SessionStatusChange.Entity.SESSION,
        from_status=locked.status,
        to_status=locked.status,
        actor=actor,
        reason=reason,
    )


def _refuse(locked, target, detail):
    raise InvalidTransition(
        "session", locked.status, target, allowed_targets(SESSION_TRANSITIONS, locked.status), detail=detail
    )


def _before_scheduled(locked, target, *, worker=None, **_):
    if worker is None:
        _refuse(locked, target, "SCHEDULED needs a worker")
    worker = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
    if locked.excluded_worker_id == worker.pk:
        _refuse(locked, target, f"worker {worker.name} is excluded by requeue")
    if worker.status != WorkerStatus.RUNNING:
        _refuse(locked, target, f"worker {worker.name} is {worker.status}, not RUNNING")
    capacity = worker_capacities([worker.pk])[str(worker.pk)]
    problem = rejection_reason(capacity, Demand.of(locked.definition))
    if problem:
        _refuse(locked, target, f"worker {worker.name} cannot take this session: {problem}")
    locked.worker = worker
    locked.scheduled_at = timezone.now()


def _before_pending(locked, target, exclude_worker: bool = False, **_):
    # A requeue that excludes the worker keeps it out of placement; any other move back to PENDING forgets it.
    locked.excluded_worker_id = locked.worker_id if exclude_worker and locked.worker_id else None
    locked.worker = None
    locked.scheduled_at = None
    locked.lab_record = None
    locked.cml_lab_id = ""
    locked.allocated_ports = {}
    locked.attempts = 0
    locked.next_attempt_at = None


def _before_instantiating(locked, target, *, prepare_lab=None, **_):
    if prepare_lab is not None:
        # The lab the session will run on and its ports, recorded in the same step (so a crash after it finds them).
        lab, ports = prepare_lab(locked)
        locked.lab_record = lab
        locked.cml_lab_id = lab.cml_lab_id or ""
        locked.allocated_ports = dict(ports)


def _before_ready(locked, target, *, user_session=None, provisioned=None, actor=None, **_):
    locked.lab_checked_at = timezone.now()  # its lab was just seen booted: the first drift check is an interval away
    if user_session:
        user_session_create(locked, actor=actor, **user_session)
    elif provisioned:
        # `(user session, fields for user_session_update)`: e.g. its devices and launch URL, recorded
        # with the move to READY.
        existing, fields = provisioned
        if existing.lablet_session_id != locked.pk:
            _refuse(locked, target, "the user session belongs to another session")
        _update_user_session(UserSession.objects.select_for_update().get(pk=existing.pk), actor=actor, **fields)
    elif not locked.user_sessions.exists():
        _refuse(locked, target, "READY needs a UserSession (create it in the same step)")


def _before_running(locked, target, *, actor=None, reason="", **_):
    locked.started_at = timezone.now()
    # However it started (the LDS event, or an instructor's Start), the candidate's session is in use now.
    for user_session in locked.user_sessions.select_for_update().filter(
        status__in=[UserSessionStatus.PROVISIONED, UserSessionStatus.PAUSED]
    ):
        _update_user_session(user_session, actor=actor, status=UserSessionStatus.ACTIVE, reason=reason or "running")


def _before_stopping(locked, target, **_):
    if not locked.end_reason:
        locked.end_reason = EndReason.COMPLETED


def _before_stopped(locked, target, *, hold_until=None, **_):
    locked.ended_at = locked.ended_at or timezone.now()
    locked.cleanup_pending = False  # STOPPED means torn down, however it got here (an EXPIRED session too)
    locked.hold_until = hold_until  # its lab kept for review until then (SPEC §3.4)
    if locked.started_at:
        locked.duration_seconds = max(0, int((locked.ended_at - locked.started_at).total_seconds()))
    else:
        locked.duration_seconds = 0


def _before_archived(locked, target, **_):
    if locked.hold_until is not None and locked.lab_record_id and _lab_kept(locked):
        _refuse(
            locked, target, "its lab is held for review: Archive ends the hold, then the lab is wiped and it archives"
        )
    if not locked.end_reason:
        locked.end_reason = EndReason.COMPLETED


def _lab_kept(locked) -> bool:
    lab = locked.lab_record
    return lab is not None and lab.active_session_id == locked.pk and lab.status not in (L.WIPED, L.DELETED)


def _holds_anything(locked) -> bool:
    return bool(
        locked.worker_id
        or locked.lab_record_id
        or locked.user_sessions.exclude(
            status__in=[UserSessionStatus.ENDED, UserSessionStatus.EXPIRED, UserSessionStatus.FAULTED]
        ).exists()
    )


def _before_terminated(locked, target, *, end_reason=None, reason="", **_):
    locked.end_reason = end_reason or EndReason.TERMINATED
    locked.end_reason_detail = reason or locked.end_reason_detail
    # Capacity is only released after teardown: STOPPED/ARCHIVED labs are already down.
    held = locked.status == S.STOPPED and locked.hold_until is not None and _lab_kept(locked)
    locked.cleanup_pending = (locked.status not in (S.STOPPED, S.ARCHIVED) or held) and _holds_anything(locked)
    locked.ended_at = locked.ended_at or timezone.now()


def _before_expired(locked, target, *, reason="", **_):
    locked.end_reason = EndReason.EXPIRED
    locked.end_reason_detail = reason or locked.end_reason_detail
    locked.cleanup_pending = _holds_anything(locked)
    locked.ended_at = locked.ended_at or timezone.now()


_BEFORE = {
    S.SCHEDULED: _before_scheduled,
    S.INSTANTIATING: _before_instantiating,
    S.PENDING: _before_pending,
    S.READY: _before_ready,
    S.RUNNING: _before_running,
    S.STOPPING: _before_stopping,
    S.STOPPED: _before_stopped,
    S.ARCHIVED: _before_archived,
    S.TERMINATED: _before_terminated,
    S.EXPIRED: _before_expired,
}


# target status → steps other apps add to that move (the grading app's: a grading session with → GRADING);
# each runs in the move's transaction, after the session's own step, with the same arguments.
_HOOKS: dict[str, list] = {}


def register_transition_hook(target: str, hook) -> None:
    """Add `hook(locked, target, *, actor, reason, **params)` to every move of a session to `target`
    (an app that depends on sessions registers it in `AppConfig.ready()`)."""
    hooks = _HOOKS.setdefault(target, [])
    if hook not in hooks:
        hooks.append(hook)


def session_transition(
    session, target: str, *, actor, reason: str = "", expected_status: str | None = None, **params
) -> LabletSession:
    """Move a session to `target` under its row lock, with the side effects SPEC §2.2 ties to it.

    `expected_status` makes the move conditional (compare-and-set): a caller that saw
    READY and asks for RUNNING loses cleanly if someone else moved it first. Extra
    params feed the target's step: `worker` (SCHEDULED), `user_session` (READY, a dict
    for `user_session_create`), `end_reason` (TERMINATED), and what the registered hooks read
    (`grading_session` with GRADING, `manual_score` with STOPPING: see `grading.services`).
    Raises InvalidTransition (→ 409) when refused; nothing is changed then.
    """
    target = normalize_status(target, SessionStatus)
    with transaction.atomic():
        locked = lock_session(session)
        before_step = snapshot(locked)
        if expected_status and locked.status != normalize_status(expected_status, SessionStatus):
            _refuse(locked, target, f"session is {locked.status}, not {expected_status.upper()}")
        if target not in SESSION_TRANSITIONS.get(locked.status, set()):
            _refuse(locked, target, None)
        before = _BEFORE.get(target)
        if before:
            before(locked, target, actor=actor, reason=reason, **params)
        for hook in _HOOKS.get(target, ()):
            hook(locked, target, actor=actor, reason=reason, **params)
        previous = apply_transition(locked, SESSION_TRANSITIONS, target, entity="session")
        if target not in (S.PENDING,):
            locked.attempts, locked.last_error, locked.next_attempt_at = 0, "", None
        locked.status_changed_at = timezone.now()
        locked.save(update_fields=changed_fields(locked, before_step))
        if target == S.READY:
            metrics.observe_ready((locked.status_changed_at - locked.created_at).total_seconds())
        record_change(
            SessionStatusChange,
            session_id=locked.pk,
            entity=SessionStatusChange.Entity.SESSION,
            from_status=previous,
            to_status=target,
            actor=actor,
            reason=reason,
        )
    publish_change("session", locked.pk, previous, target, actor=actor_name(actor), reason=reason)
    return locked


def session_terminate(session, *, actor, reason: str = "", end_reason: str = EndReason.TERMINATED) -> LabletSession:
    """Terminate a session from any non-terminal state; teardown follows (`cleanup_pending`).

    An ARCHIVED session is finished and is refused: terminating it would rewrite how it ended.
    """
    if LabletSession.objects.filter(pk=session.pk, status=S.ARCHIVED).exists():
        raise InvalidTransition(
            "session", S.ARCHIVED, S.TERMINATED, [], detail="an ARCHIVED session is finished; it cannot be terminated"
        )
    return session_transition(session, S.TERMINATED, actor=actor, reason=reason, end_reason=end_reason)


def session_cleanup_finished(session, *, actor, reason: str = "teardown finished") -> LabletSession:
    """Mark a terminated/expired session's teardown as done, releasing the capacity it held."""
    with transaction.atomic():
        locked = lock_session(session)
        if not locked.cleanup_pending:
            return locked
        locked.cleanup_pending = False
        locked.save(update_fields=["cleanup_pending", "updated_at"])
        record_session_note(locked, actor=actor, reason=reason)
    # Announced, so the projection removes its coordination keys now that it is clean.
    publish_change("session", locked.pk, locked.status, locked.status, actor=actor_name(actor), reason=reason)
    return locked


def session_end_hold(session, *, actor, reason: str = "") -> LabletSession:
    """End a STOPPED session's review hold now (the Archive button, SPEC §3.4): the reconciler then wipes the
    kept lab and archives it. Refused (409) for a session that is not held."""
    with transaction.atomic():
        locked = lock_session(session)
        if locked.status != S.STOPPED or locked.hold_until is None:
            _refuse(locked, S.ARCHIVED, f"a {locked.status} session that is not held for review archives by itself")
        locked.hold_until = min(locked.hold_until, timezone.now())
        locked.save(update_fields=["hold_until", "updated_at"])
        note = reason or "review hold ended: archiving"
        record_session_note(locked, actor=actor, reason=note)
    publish_change("session", locked.pk, locked.status, locked.status, actor=actor_name(actor), reason=note)
    return locked


def session_requeue(session, *, actor, reason: str = "", exclude_worker: bool = False) -> LabletSession:
    """SCHEDULED → PENDING (placement again); for other active sessions, clear the backoff so the loop retries now.

    `exclude_worker`: placement never puts the session back on the worker it is leaving (`excluded_worker`);
    the history row names that worker."""
    with transaction.atomic():
        locked = lock_session(session)
        if locked.status == S.SCHEDULED:
            reason = reason or "requeued"
            if exclude_worker and locked.worker_id:
                reason = f"{reason}; not to be placed on {locked.worker.name} again"
            return session_transition(locked, S.PENDING, actor=actor, reason=reason, exclude_worker=exclude_worker)
        if locked.status in (S.ARCHIVED, S.TERMINATED):
            _refuse(locked, S.PENDING, f"a {locked.status} session cannot be requeued")
        locked.attempts, locked.last_error, locked.next_attempt_at = 0, "", None
        locked.save(update_fields=["attempts", "last_error", "next_attempt_at", "updated_at"])
        note = reason or "nudged: retry now"
        record_session_note(locked, actor=actor, reason=note)
    publish_change("session", locked.pk, locked.status, locked.status, actor=actor_name(actor), reason=note)
    return locked


# --- lab drift (SPEC §11): a READY/RUNNING session whose lab is gone or not running in CML -----------------

DRIFT_STATUSES = (S.READY, S.RUNNING)


def _note_and_announce(locked, fields: list[str], *, actor, reason: str) -> LabletSession:
    """Save `fields` of a locked session with a timeline row (its status unchanged), announced after commit."""
    locked.save(update_fields=[*fields, "updated_at"])
    record_session_note(locked, actor=actor, reason=reason)
    publish_change("session", locked.pk, locked.status, locked.status, actor=actor_name(actor), reason=reason)
    return locked


def session_mark_degraded(session, problem: str, *, actor) -> LabletSession:
    """The drift check found the session's lab gone or not running: flag the session degraded (once, with the
    problem on its timeline). A session that left READY/RUNNING meanwhile is left alone."""
    with transaction.atomic():
        locked = lock_session(session)
        if locked.status not in DRIFT_STATUSES or locked.degraded_at is not None:
            return locked
        locked.degraded_at = timezone.now()
        locked.degraded_reason = problem[:2000]
        return _note_and_announce(
            locked, ["degraded_at", "degraded_reason"], actor=actor,
            reason=f"degraded: {problem}; Re-instantiate brings up a fresh lab with the same ports",
        )  # fmt: skip


def session_clear_degraded(session, *, actor, reason: str) -> LabletSession:
    """The session's lab is running again (re-instantiated, or back by itself): the flag and any request go."""
    with transaction.atomic():
        locked = lock_session(session)
        if locked.degraded_at is None and locked.reinstantiate_requested_at is None:
            return locked
        locked.degraded_at = locked.reinstantiate_requested_at = None
        locked.degraded_reason = ""
        locked.lab_checked_at = timezone.now()
        fields = ["degraded_at", "degraded_reason", "reinstantiate_requested_at", "lab_checked_at", "cml_lab_id"]
        if locked.lab_record_id:
            locked.cml_lab_id = locked.lab_record.cml_lab_id or locked.cml_lab_id
        return _note_and_announce(locked, fields, actor=actor, reason=reason)


def session_reinstantiate(session, *, actor, reason: str = "") -> LabletSession:
    """Ask for a fresh lab for a degraded READY/RUNNING session, on the same worker with the same ports (the
    "Re-instantiate" button); the lablet reconciler brings it up and clears the flag. Refused (409) for a session
    that is not degraded or not READY/RUNNING; asking twice is harmless."""
    with transaction.atomic():
        locked = lock_session(session)
        if locked.status not in DRIFT_STATUSES:
            _refuse(
                locked, locked.status, f"only a READY or RUNNING session can be re-instantiated, not {locked.status}"
            )
        if locked.degraded_at is None:
            _refuse(locked, locked.status, "its lab is running: there is nothing to re-instantiate")
        if locked.reinstantiate_requested_at is not None:
            return locked
        locked.reinstantiate_requested_at = timezone.now()
        why = reason or "re-instantiate requested"
        return _note_and_announce(
            locked, ["reinstantiate_requested_at"], actor=actor,
            reason=f"{why} ({locked.degraded_reason or 'lab drift'}): a fresh lab comes up with the same ports",
        )  # fmt: skip


def session_lab_checked(session, at) -> None:
    """When the drift check last asked CML (bookkeeping of the check's rate: one column, no lock, no history)."""
    LabletSession.objects.filter(pk=session.pk).update(lab_checked_at=at)


def session_attach_lab(session, lab_record, *, ports: dict[str, int] | None = None) -> LabletSession:
    """Bind the session to its lab (and copy the lab's ports and CML id); the lab records the session."""
    with transaction.atomic():
        locked = lock_session(session)
        locked.lab_record = lab_record
        locked.cml_lab_id = lab_record.cml_lab_id or ""
        if ports is not None:
            locked.allocated_ports = dict(ports)
        locked.save(update_fields=["lab_record", "cml_lab_id", "allocated_ports", "updated_at"])
    return locked


def session_record_failure(session, error: str, *, retry_in: timedelta) -> LabletSession:
    """Record a failed reconcile attempt and when to retry (the backoff lives on the row)."""
    with transaction.atomic():
        locked = lock_session(session)
        locked.attempts += 1
        locked.last_error = str(error)[:2000]
        locked.next_attempt_at = timezone.now() + retry_in
        locked.save(update_fields=["attempts", "last_error", "next_attempt_at", "updated_at"])
    return locked


# ---------------------------------------------------------------------------------------
# User sessions (LDS)
# ---------------------------------------------------------------------------------------

_USER_SESSION_FIELDS = ("lds_session_id", "lds_part_id", "login_url", "devices", "error_message", "lds_ends_at")


# A device as stored on a UserSession (and handed to LDS and the Grading Engine): a flat object whose text
# values are bounded; `port` is a TCP port or null. Anything else could not be shown or sent back later.
DEVICE_TEXT_LIMITS = {"label": 200, "protocol": 20, "host": 255, "password": 200}
MAX_DEVICES = 1000
# The candidate opens the login URL in a browser: only http(s) may be stored (never `javascript:` or `data:`).
_HTTP_URL = URLValidator(schemes=["http", "https"])


def _device_problem(device) -> str | None:
    """What is wrong with one device, or None."""
    if not isinstance(device, dict):
        return "must be an object {label, protocol, host, port}"
    unknown = sorted(str(key)[:50] for key in device if key not in DEVICE_TEXT_LIMITS and key != "port")
    if unknown:
        return f"has unknown keys {', '.join(unknown[:5])}; expected label, protocol, host, port"
    for name, limit in DEVICE_TEXT_LIMITS.items():
        value = device.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit or "\x00" in value:
            return f"{name} must be text of at most {limit} characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} holds characters that cannot be stored"
    if not str(device.get("label") or "").strip():
        return "label is required"
    port = device.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        return "port must be a whole number from 1 to 65535 (or null)"
    return None


def _clean_devices(devices):
    """The devices to store: a list of at most `MAX_DEVICES` flat device objects (ValidationError naming `devices`)."""
    if devices is None:
        return []
    if not isinstance(devices, list):
        raise ValidationError({"devices": ["must be a list of {label, protocol, host, port} objects"]})
    if len(devices) > MAX_DEVICES:
        raise ValidationError({"devices": [f"must hold at most {MAX_DEVICES} devices"]})
    problems = [f"device {index}: {problem}" for index, d in enumerate(devices) if (problem := _device_problem(d))]
    if problems:
        raise ValidationError({"devices": problems[:10]})
    return devices


def _clean_login_url(fields: dict) -> None:
    """Refuse a `login_url` that is not an http(s) URL (ValidationError naming it); blank clears it."""
    url = fields.get("login_url")
    if url in (None, ""):
        return
    try:
        if not isinstance(url, str) or len(url) > 1000:
            raise ValidationError("too long")
        _HTTP_URL(url)
    except ValidationError:
        raise ValidationError({"login_url": ["must be an http(s) URL of at most 1000 characters"]}) from None


def move_child(locked, status: str, *, choices, table, entity, actor, reason: str) -> str:
    """Move a session's child (its user session, its grading session), locked by the caller, to `status` through
    the child's state machine, with the history row on the session; returns the normalized status."""
    previous = locked.status
    status = normalize_status(status, choices)
    if status != previous:
        apply_transition(locked, table, status, entity=entity.label.lower())
        record_change(
            SessionStatusChange,
            session_id=locked.lablet_session_id,
            entity=entity,
            from_status=previous,
            to_status=status,
            actor=actor,
            reason=reason,
        )
    return status


def user_session_create(session, *, actor, status=UserSessionStatus.PROVISIONING, reason: str = "", **fields):
    """Create the UserSession of a lablet session (history row on the session's timeline)."""
    unknown = set(fields) - set(_USER_SESSION_FIELDS)
    if unknown:
        raise ValidationError({name: ["is not a user session field"] for name in sorted(unknown)})
    fields["devices"] = _clean_devices(fields.get("devices"))
    _clean_login_url(fields)
    status = normalize_status(status, UserSessionStatus)
    with transaction.atomic():
        session_pk = session.pk if isinstance(session, LabletSession) else session
        user_session = UserSession.objects.create(lablet_session_id=session_pk, status=status, **fields)
        record_change(
            SessionStatusChange,
            session_id=session_pk,
            entity=SessionStatusChange.Entity.USER_SESSION,
            from_status="",
            to_status=status,
            actor=actor,
            reason=reason or "created",
        )
    publish_change("user_session", user_session.pk, "", status, actor=actor_name(actor), reason=reason)
    return user_session


def user_session_update(user_session, *, actor, status: str | None = None, reason: str = "", **fields):
    """Update a UserSession's fields and, when `status` differs, move it through its FSM."""
    with transaction.atomic():
        locked = UserSession.objects.select_for_update().get(pk=user_session.pk)
        return _update_user_session(locked, actor=actor, status=status, reason=reason, **fields)


def _update_user_session(locked, *, actor, status: str | None = None, reason: str = "", **fields):
    """`user_session_update`'s step on a row the caller has locked, inside its transaction."""
    unknown = set(fields) - set(_USER_SESSION_FIELDS)
    if unknown:
        raise ValidationError({name: ["is not a user session field"] for name in sorted(unknown)})
    if "devices" in fields:
        fields["devices"] = _clean_devices(fields["devices"])
    _clean_login_url(fields)
    before_step = snapshot(locked)
    for name, value in fields.items():
        setattr(locked, name, value)
    previous = locked.status
    if status is not None:
        status = move_child(
            locked, status, choices=UserSessionStatus, table=USER_SESSION_TRANSITIONS,
            entity=SessionStatusChange.Entity.USER_SESSION, actor=actor, reason=reason,
        )  # fmt: skip
    locked.save(update_fields=changed_fields(locked, before_step))
    if status is not None and status != previous:
        publish_change("user_session", locked.pk, previous, status, actor=actor_name(actor), reason=reason)
    return locked
