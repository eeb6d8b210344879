"""Writers for definitions, lablet sessions and user sessions: the one path every change takes.

Each service takes the row lock, runs the FSM transition, writes the history row with
actor and reason, and leaves side effects to `transaction.on_commit` (`lcm.events`).
UI, REST, admin actions, commands, the webhook and the reconcilers all call these.
"""

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Case, UUIDField, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from lcm.errors import Conflict
from lcm.events import publish_change, publish_changes
from lcm.fsm import (
    InvalidTransition,
    actor_name,
    allowed_targets,
    apply_transition,
    changed_fields,
    normalize_status,
    record_change,
    record_changes,
    snapshot,
)
from lcm.versions import version_key
from scheduling.capacity import Demand, rejection_reason
from scheduling.selectors import worker_capacities
from sessions.labyaml import LabYamlError, analyze_lab_yaml
from sessions.models import LabletDefinition, LabletSession, SessionStatusChange, UserSession
from sessions.states import (
    DEFINITION_TRANSITIONS,
    SESSION_TRANSITIONS,
    USER_SESSION_TRANSITIONS,
    DefinitionStatus,
    EndReason,
    SessionStatus,
    UserSessionStatus,
)
from workers.models import CMLWorker
from workers.states import LicenseType, WorkerStatus

logger = logging.getLogger("lcm.sessions.services")

S = SessionStatus
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
CML_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")

# Sessions whose timeslot can still be extended (they have not finished running).
EXTENDABLE = {S.PENDING, S.SCHEDULED, S.INSTANTIATING, S.READY, S.RUNNING, S.COLLECTING, S.GRADING}


# ---------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------

_DEFINITION_FIELDS = (
    "description", "lab_artifact_uri", "cpu_cores", "memory_gb", "storage_gb", "license_affinity",
    "cml_version_min", "cml_version_max", "max_duration_minutes", "boot_lead_minutes", "form_qualified_name",
    "grading_enabled", "lab_reuse_enabled",
)  # fmt: skip
_CONTENT_FIELDS = ("lab_yaml", *_DEFINITION_FIELDS)


def _positive_int(errors, name, value, *, allow_none=False, minimum=1, maximum=100_000):
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        errors[name] = ["must be a whole number"]
        return None
    try:
        number = int(value)
        if str(value).strip() != str(number) and not isinstance(value, int):
            raise ValueError
    except (TypeError, ValueError):
        errors[name] = ["must be a whole number"]
        return None
    if not minimum <= number <= maximum:
        errors[name] = [f"must be between {minimum} and {maximum}"]
        return None
    return number


def _clean_definition(data: dict) -> dict:
    """Validate definition fields; raises ValidationError naming every bad field."""
    errors: dict[str, list[str]] = {}
    clean: dict = {}
    name = str(data.get("name") or "").strip()
    if not name:
        errors["name"] = ["is required"]
    elif len(name) > 200:
        errors["name"] = ["must be at most 200 characters"]
    clean["name"] = name
    version = str(data.get("version") or "1.0.0").strip()
    if not SEMVER.match(version):
        errors["version"] = [f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH)"]
    clean["version"] = version

    lab_yaml = data.get("lab_yaml")
    try:
        analysis = analyze_lab_yaml(lab_yaml if isinstance(lab_yaml, str) else "")
    except LabYamlError as exc:
        errors["lab_yaml"] = [f"{exc.field}: {exc.message}" if exc.field != "lab_yaml" else exc.message]
        analysis = None
    clean["lab_yaml"] = lab_yaml
    if analysis is not None:
        clean["node_count"] = analysis.node_count
        clean["node_definitions_required"] = analysis.node_definitions
        clean["port_template"] = analysis.port_template
        clean["lab_yaml_hash"] = hashlib.sha256(lab_yaml.encode()).hexdigest()

    clean["description"] = str(data.get("description") or "")
    clean["lab_artifact_uri"] = str(data.get("lab_artifact_uri") or "")[:500]
    requirements = data.get("resource_requirements") or {}
    if not isinstance(requirements, dict):
        errors["resource_requirements"] = ["must be an object with cpu_cores, memory_gb, storage_gb"]
        requirements = {}
    for key, default in (("cpu_cores", 1), ("memory_gb", 1), ("storage_gb", 1)):
        value = data.get(key, requirements.get(key, default))
        clean[key] = _positive_int(errors, key, value, maximum=10_000)

    affinity = data.get("license_affinity") or []
    if isinstance(affinity, str):
        affinity = [a for a in re.split(r"[,\s]+", affinity) if a]
    if not isinstance(affinity, list):
        errors["license_affinity"] = ["must be a list of PERSONAL, ENTERPRISE, EVALUATION"]
        affinity = []
    normalized = []
    for item in affinity:
        text = str(item).strip().upper()
        if text not in LicenseType.values:
            errors["license_affinity"] = [f"unknown licence {item!r}; expected PERSONAL, ENTERPRISE or EVALUATION"]
        elif text not in normalized:
            normalized.append(text)
    clean["license_affinity"] = normalized

    for key in ("cml_version_min", "cml_version_max"):
        text = str(data.get(key) or "").strip()
        if text and not CML_VERSION.match(text):
            errors[key] = [f"{text!r} is not a version like 2.9 or 2.9.1"]
        clean[key] = text
    if (
        clean["cml_version_min"]
        and clean["cml_version_max"]
        and "cml_version_min" not in errors
        and "cml_version_max" not in errors
        and version_key(clean["cml_version_min"]) > version_key(clean["cml_version_max"])
    ):
        errors["cml_version_max"] = ["must not be lower than cml_version_min"]

    clean["max_duration_minutes"] = _positive_int(
        errors, "max_duration_minutes", data.get("max_duration_minutes", 60), maximum=7 * 24 * 60
    )
    clean["boot_lead_minutes"] = _positive_int(
        errors, "boot_lead_minutes", data.get("boot_lead_minutes"), allow_none=True, minimum=0, maximum=24 * 60
    )
    clean["form_qualified_name"] = str(data.get("form_qualified_name") or "").strip()
    clean["grading_enabled"] = bool(data.get("grading_enabled", False))
    clean["lab_reuse_enabled"] = bool(data.get("lab_reuse_enabled", True))
    if clean["grading_enabled"] and not clean["form_qualified_name"]:
        errors["form_qualified_name"] = ["is required when grading is enabled"]
    if errors:
        raise ValidationError(errors)
    return clean


def definition_create(*, actor, status=DefinitionStatus.ACTIVE, **data) -> LabletDefinition:
    """Validate and store a new definition (or a new version of a name). Raises ValidationError."""
    clean = _clean_definition(data)
    status = normalize_status(status, DefinitionStatus)
    try:
        with transaction.atomic():
            definition = LabletDefinition.objects.create(status=status, created_by=actor_name(actor), **clean)
    except IntegrityError:
        raise ValidationError(
            {"version": [f"{clean['name']} {clean['version']} already exists; publish a new version"]}
        ) from None
    publish_change("definition", definition.pk, "", status, actor=actor_name(actor), reason="created")
    return definition


def _next_version(name: str, current: str) -> str:
    versions = LabletDefinition.objects.filter(name=name).values_list("version", flat=True)
    newest = max([current, *versions], key=version_key)
    major, minor, _patch = (list(version_key(newest)) + [0, 0, 0])[:3]
    return f"{major}.{minor + 1}.0"


def definition_new_version(definition: LabletDefinition, *, actor, version: str | None = None, **changes):
    """Publish a changed copy of `definition` as a new version (published versions are immutable)."""
    unknown = set(changes) - set(_CONTENT_FIELDS) - {"resource_requirements", "name"}
    if unknown:
        raise ValidationError({name: ["is not a definition field"] for name in sorted(unknown)})
    if changes.get("name") not in (None, definition.name):
        raise ValidationError({"name": ["cannot change; create a new definition instead"]})
    data = {f: getattr(definition, f) for f in _CONTENT_FIELDS}
    if isinstance(changes.get("resource_requirements"), dict):
        # New requirements replace the old ones (individual fields given as well still win).
        for key in ("cpu_cores", "memory_gb", "storage_gb"):
            if key in changes["resource_requirements"]:
                data.pop(key, None)
    data.update({k: v for k, v in changes.items() if k != "name"})
    new_version = version or _next_version(definition.name, definition.version)
    if SEMVER.match(new_version) and version_key(new_version) <= version_key(definition.version):
        raise ValidationError({"version": [f"must be greater than {definition.version}"]})
    return definition_create(actor=actor, name=definition.name, version=new_version, **data)


def definition_transition(definition: LabletDefinition, target: str, *, actor, reason: str = "") -> LabletDefinition:
    """Change a definition's status (ACTIVE/INACTIVE/DEPRECATED/ARCHIVED)."""
    target = normalize_status(target, DefinitionStatus)
    with transaction.atomic():
        locked = LabletDefinition.objects.select_for_update().get(pk=definition.pk)
        previous = apply_transition(locked, DEFINITION_TRANSITIONS, target, entity="definition")
        locked.save()
    publish_change("definition", locked.pk, previous, target, actor=actor_name(actor), reason=reason)
    return locked


# ---------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------


def _as_aware(errors, name, value):
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:  # well-formed but impossible, e.g. February 30
            parsed = None
        if parsed is None:
            errors[name] = [f"{value!r} is not an ISO 8601 date-time"]
            return None
        value = parsed
    if not isinstance(value, datetime):
        errors[name] = ["must be a date-time"]
        return None
    if timezone.is_naive(value):
        errors[name] = ["must include a timezone (e.g. 2026-01-01T09:00:00Z)"]
        return None
    return value


def session_create(
    *,
    definition,
    owner: str,
    actor,
    timeslot_start=None,
    timeslot_end=None,
    reservation_id: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> LabletSession:
    """Book a session (SPEC §3.1); result PENDING.

    Raises ValidationError naming each bad field, or Conflict with the existing session's id
    when `reservation_id` was booked already (so an upstream retry is idempotent).
    """
    errors: dict[str, list[str]] = {}
    now = now or timezone.now()
    if not isinstance(definition, LabletDefinition):
        try:
            definition = LabletDefinition.objects.get(pk=definition)
        except (LabletDefinition.DoesNotExist, ValueError, ValidationError):
            errors["definition_id"] = [f"no definition with id {definition!r}"]
            definition = None
    if definition is not None and definition.status != DefinitionStatus.ACTIVE:
        errors["definition_id"] = [f"definition {definition} is {definition.status}; sessions need an ACTIVE one"]
    owner = str(owner or "").strip()
    if not owner:
        errors["owner"] = ["is required"]
    elif len(owner) > 200:
        errors["owner"] = ["must be at most 200 characters"]
    reservation_id = str(reservation_id).strip() if reservation_id not in (None, "") else None
    if reservation_id and len(reservation_id) > 200:
        errors["reservation_id"] = ["must be at most 200 characters"]

    start = _as_aware(errors, "timeslot_start", timeslot_start)
    end = _as_aware(errors, "timeslot_end", timeslot_end)
    if "timeslot_start" not in errors:
        grace = timedelta(seconds=settings.LCM_SESSION_START_GRACE_SECONDS)
        if start is None:
            start = now  # ASAP
        elif start < now - grace:
            errors["timeslot_start"] = ["is in the past"]
    if definition is not None and start is not None and "timeslot_end" not in errors:
        maximum = timedelta(minutes=definition.max_duration_minutes)
        if end is None:
            end = start + maximum
        elif end <= start:
            errors["timeslot_end"] = ["must be after timeslot_start"]
        elif end - start > maximum:
            minutes = int((end - start).total_seconds() // 60)
            errors["timeslot_end"] = [
                f"timeslot is {minutes} minutes; {definition} allows at most {definition.max_duration_minutes}"
            ]
    if errors:
        raise ValidationError(errors)

    if reservation_id:
        existing = LabletSession.objects.filter(reservation_id=reservation_id).values_list("pk", flat=True).first()
        if existing:
            raise Conflict(
                f"reservation {reservation_id!r} is already booked as session {existing}",
                existing_id=existing,
                field="reservation_id",
            )
    try:
        with transaction.atomic():
            session = LabletSession.objects.create(
                status_changed_at=now,
                definition=definition,
                definition_version=definition.version,
                owner=owner,
                reservation_id=reservation_id,
                timeslot_start=start,
                timeslot_end=end,
                created_by=actor_name(actor),
            )
            record_change(
                SessionStatusChange,
                session_id=session.pk,
                entity=SessionStatusChange.Entity.SESSION,
                from_status="",
                to_status=S.PENDING,
                actor=actor,
                reason=reason or "booked",
            )
    except IntegrityError:
        existing = LabletSession.objects.filter(reservation_id=reservation_id).values_list("pk", flat=True).first()
        if existing:
            raise Conflict(
                f"reservation {reservation_id!r} is already booked as session {existing}",
                existing_id=existing,
                field="reservation_id",
            ) from None
        raise
    publish_change("session", session.pk, "", S.PENDING, actor=actor_name(actor), reason=reason or "booked")
    return session


def _lock_session(session) -> LabletSession:
    """The session's row, locked. Only that row: its definition (loaded when a step needs it) stays
    unlocked, or every session of a definition would queue behind each other's transitions."""
    pk = session.pk if isinstance(session, LabletSession) else session
    return LabletSession.objects.select_for_update().get(pk=pk)


def _refuse(locked, target, detail):
    raise InvalidTransition(
        "session", locked.status, target, allowed_targets(SESSION_TRANSITIONS, locked.status), detail=detail
    )


def _before_scheduled(locked, target, *, worker=None, **_):
    if worker is None:
        _refuse(locked, target, "SCHEDULED needs a worker")
    worker = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
    if worker.status != WorkerStatus.RUNNING:
        _refuse(locked, target, f"worker {worker.name} is {worker.status}, not RUNNING")
    capacity = worker_capacities([worker.pk])[str(worker.pk)]
    problem = rejection_reason(capacity, Demand.of(locked.definition))
    if problem:
        _refuse(locked, target, f"worker {worker.name} cannot take this session: {problem}")
    locked.worker = worker
    locked.scheduled_at = timezone.now()


def _before_pending(locked, target, **_):
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


def _before_running(locked, target, **_):
    locked.started_at = timezone.now()


def _before_stopping(locked, target, **_):
    if not locked.end_reason:
        locked.end_reason = EndReason.COMPLETED


def _before_stopped(locked, target, **_):
    locked.ended_at = locked.ended_at or timezone.now()
    if locked.started_at:
        locked.duration_seconds = max(0, int((locked.ended_at - locked.started_at).total_seconds()))
    else:
        locked.duration_seconds = 0


def _before_archived(locked, target, **_):
    if not locked.end_reason:
        locked.end_reason = EndReason.COMPLETED


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
    locked.cleanup_pending = locked.status not in (S.STOPPED, S.ARCHIVED) and _holds_anything(locked)
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
        locked = _lock_session(session)
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
    """Terminate a session from any non-terminal state; teardown follows (`cleanup_pending`)."""
    return session_transition(session, S.TERMINATED, actor=actor, reason=reason, end_reason=end_reason)


def session_cleanup_finished(session, *, actor, reason: str = "teardown finished") -> LabletSession:
    """Mark a terminated/expired session's teardown as done, releasing the capacity it held."""
    with transaction.atomic():
        locked = _lock_session(session)
        if locked.cleanup_pending:
            locked.cleanup_pending = False
            locked.save(update_fields=["cleanup_pending", "updated_at"])
            record_change(
                SessionStatusChange,
                session_id=locked.pk,
                entity=SessionStatusChange.Entity.SESSION,
                from_status=locked.status,
                to_status=locked.status,
                actor=actor,
                reason=reason,
            )
    return locked


def session_extend(session, new_end, *, actor, reason: str = "", is_admin: bool = False) -> LabletSession:
    """Move the timeslot end later (SPEC §2.2 `extend`).

    The total stays within the definition's `max_duration_minutes` unless an admin asks.
    Capacity needs no new check: a session holds its capacity until its lab is stopped,
    so the extra time is already covered.
    """
    errors: dict[str, list[str]] = {}
    new_end = _as_aware(errors, "timeslot_end", new_end)
    if new_end is None and not errors:
        errors["timeslot_end"] = ["is required"]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        locked = _lock_session(session)
        if locked.status not in EXTENDABLE:
            raise InvalidTransition(
                "session", locked.status, locked.status, [], detail=f"a {locked.status} session cannot be extended"
            )
        if new_end <= locked.timeslot_end:
            raise ValidationError(
                {"timeslot_end": [f"must be later than the current end {locked.timeslot_end:%Y-%m-%dT%H:%M:%SZ}"]}
            )
        if new_end <= timezone.now():
            raise ValidationError({"timeslot_end": ["is in the past"]})
        total = new_end - locked.timeslot_start
        limit = locked.definition.max_duration_minutes
        if not is_admin and total > timedelta(minutes=limit):
            raise ValidationError(
                {
                    "timeslot_end": [
                        f"the timeslot would last {int(total.total_seconds() // 60)} minutes; at most {limit} allowed"
                    ]
                }
            )
        old_end = locked.timeslot_end
        locked.timeslot_end = new_end
        locked.save(update_fields=["timeslot_end", "updated_at"])
        note = f"timeslot_end {old_end.isoformat()} → {new_end.isoformat()}" + (f": {reason}" if reason else "")
        record_change(
            SessionStatusChange,
            session_id=locked.pk,
            entity=SessionStatusChange.Entity.SESSION,
            from_status=locked.status,
            to_status=locked.status,
            actor=actor,
            reason=note,
        )
    publish_change("session", locked.pk, locked.status, locked.status, actor=actor_name(actor), reason=note)
    return locked


def session_requeue(session, *, actor, reason: str = "") -> LabletSession:
    """SCHEDULED → PENDING (placement again); for other active sessions, clear the backoff so the loop retries now."""
    with transaction.atomic():
        locked = _lock_session(session)
        if locked.status == S.SCHEDULED:
            return session_transition(locked, S.PENDING, actor=actor, reason=reason or "requeued")
        if locked.status in (S.ARCHIVED, S.TERMINATED):
            _refuse(locked, S.PENDING, f"a {locked.status} session cannot be requeued")
        locked.attempts, locked.last_error, locked.next_attempt_at = 0, "", None
        locked.save(update_fields=["attempts", "last_error", "next_attempt_at", "updated_at"])
        note = reason or "nudged: retry now"
        record_change(
            SessionStatusChange,
            session_id=locked.pk,
            entity=SessionStatusChange.Entity.SESSION,
            from_status=locked.status,
            to_status=locked.status,
            actor=actor,
            reason=note,
        )
    publish_change("session", locked.pk, locked.status, locked.status, actor=actor_name(actor), reason=note)
    return locked


def session_attach_lab(session, lab_record, *, ports: dict[str, int] | None = None) -> LabletSession:
    """Bind the session to its lab (and copy the lab's ports and CML id); the lab records the session."""
    with transaction.atomic():
        locked = _lock_session(session)
        locked.lab_record = lab_record
        locked.cml_lab_id = lab_record.cml_lab_id or ""
        if ports is not None:
            locked.allocated_ports = dict(ports)
        locked.save(update_fields=["lab_record", "cml_lab_id", "allocated_ports", "updated_at"])
    return locked


def session_record_failure(session, error: str, *, retry_in: timedelta) -> LabletSession:
    """Record a failed reconcile attempt and when to retry (the backoff lives on the row)."""
    with transaction.atomic():
        locked = _lock_session(session)
        locked.attempts += 1
        locked.last_error = str(error)[:2000]
        locked.next_attempt_at = timezone.now() + retry_in
        locked.save(update_fields=["attempts", "last_error", "next_attempt_at", "updated_at"])
    return locked


# ---------------------------------------------------------------------------------------
# User sessions (LDS)
# ---------------------------------------------------------------------------------------

_USER_SESSION_FIELDS = ("lds_session_id", "lds_part_id", "login_url", "devices", "error_message")


def _clean_devices(devices):
    if devices is None:
        return []
    if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
        raise ValidationError({"devices": ["must be a list of {label, protocol, host, port} objects"]})
    return devices


def user_session_create(session, *, actor, status=UserSessionStatus.PROVISIONING, reason: str = "", **fields):
    """Create the UserSession of a lablet session (history row on the session's timeline)."""
    unknown = set(fields) - set(_USER_SESSION_FIELDS)
    if unknown:
        raise ValidationError({name: ["is not a user session field"] for name in sorted(unknown)})
    fields["devices"] = _clean_devices(fields.get("devices"))
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
    before_step = snapshot(locked)
    for name, value in fields.items():
        setattr(locked, name, value)
    previous = locked.status
    if status is not None:
        status = normalize_status(status, UserSessionStatus)
        if status != locked.status:
            apply_transition(locked, USER_SESSION_TRANSITIONS, status, entity="user session")
            record_change(
                SessionStatusChange,
                session_id=locked.lablet_session_id,
                entity=SessionStatusChange.Entity.USER_SESSION,
                from_status=previous,
                to_status=status,
                actor=actor,
                reason=reason,
            )
    locked.save(update_fields=changed_fields(locked, before_step))
    if status is not None and status != previous:
        publish_change("user_session", locked.pk, previous, status, actor=actor_name(actor), reason=reason)
    return locked


# ---------------------------------------------------------------------------------------
# Batch placement
# ---------------------------------------------------------------------------------------

# States a session may be scheduled from, read from the transition table (SPEC §2.2: PENDING only).
_SCHEDULABLE_FROM = sorted(source for source, targets in SESSION_TRANSITIONS.items() if S.SCHEDULED in targets)


@dataclass
class ScheduleOutcome:
    """What `sessions_schedule_batch` did with each assignment, in the order given."""

    placed: list[tuple[str, str]] = field(default_factory=list)  # (session id, worker id)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (session id, worker id, why)
    # Workers that refused an assignment (full, not RUNNING, gone): the caller's view of them is stale.
    stale_workers: set[str] = field(default_factory=set)


def sessions_schedule_batch(assignments, *, actor, now: datetime | None = None) -> ScheduleOutcome:
    """→ SCHEDULED for many sessions at once, each onto its chosen worker, in one transaction.

    `assignments` is a sequence of `(session id, worker id, reason)`, most urgent first. This is
    `session_transition(session, SCHEDULED, worker=…)` for a whole scheduler tick, with the same
    guarantees and a constant number of queries:
    - the workers are locked first, all at once and in id order (so two batches queue on their
      first shared worker and never deadlock), and must be RUNNING;
    - their usage is re-read under those locks in one query (`worker_capacities`), and each
      assignment is claimed against it in the order given: one that no longer fits (another
      scheduler got there first) is refused, later ones may still fit. Capacity only grows
      through this lock, so two schedulers racing can never overbook a worker;
    - the sessions are locked with SKIP LOCKED and only in a state the transition table lets
      reach SCHEDULED; one that moved on, or that another transaction is changing right now, is
      refused rather than waited for. Never waiting on a session lock while holding worker locks
      keeps this order (worker → session) deadlock-free against `session_transition`
      (session → worker);
    - the placed sessions get what `session_transition` gives them (worker, `scheduled_at`,
      `status_changed_at`, cleared backoff) in one UPDATE, and one history row each in one
      INSERT; `publish_changes` announces them together after commit.
    Refusals change nothing for that session; `stale_workers` names the workers the caller should
    re-read before deciding those sessions again.
    """
    outcome = ScheduleOutcome()
    wanted: dict[str, tuple[str, str]] = {}
    for session_id, worker_id, reason in assignments:
        session_id, worker_id = str(session_id), str(worker_id)
        if session_id in wanted:
            outcome.refused.append((session_id, worker_id, "assigned twice in one batch"))
            continue
        wanted[session_id] = (worker_id, reason or "")
    if not wanted:
        return outcome
    now = now or timezone.now()
    actor_text = actor_name(actor)
    placed: list[tuple[str, str, str]] = []
    with transaction.atomic():
        workers = {
            str(pk): (name, status)
            for pk, name, status in CMLWorker.objects.select_for_update()
            .filter(pk__in=sorted({w for w, _ in wanted.values()}))
            .order_by("pk")
            .values_list("pk", "name", "status")
        }
        capacities = worker_capacities(list(workers)) if workers else {}
        locked = {
            str(pk): (definition_id, status)
            for pk, definition_id, status in LabletSession.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=list(wanted), status__in=_SCHEDULABLE_FROM)
            .values_list("pk", "definition_id", "status")
        }
        demands = {d.pk: Demand.of(d) for d in LabletDefinition.objects.filter(pk__in={d for d, _ in locked.values()})}
        for session_id, (worker_id, reason) in wanted.items():
            if session_id not in locked:
                outcome.refused.append(
                    (session_id, worker_id, f"session is no longer {'/'.join(_SCHEDULABLE_FROM)} or is being changed")
                )
                continue
            name, status = workers.get(worker_id, (worker_id, "gone"))
            if status != WorkerStatus.RUNNING:
                outcome.refused.append((session_id, worker_id, f"worker {name} is {status}, not RUNNING"))
                outcome.stale_workers.add(worker_id)
                continue
            demand = demands[locked[session_id][0]]
            problem = rejection_reason(capacities[worker_id], demand)
            if problem:
                outcome.refused.append((session_id, worker_id, f"worker {name} cannot take this session: {problem}"))
                outcome.stale_workers.add(worker_id)
                continue
            capacities[worker_id] = capacities[worker_id].claimed(demand)
            placed.append((session_id, worker_id, reason))
        if placed:
            by_worker: dict[str, list[str]] = {}
            for session_id, worker_id, _ in placed:
                by_worker.setdefault(worker_id, []).append(session_id)
            LabletSession.objects.filter(pk__in=[p[0] for p in placed]).update(
                status=S.SCHEDULED,
                worker=Case(
                    *(When(pk__in=ids, then=Value(uuid.UUID(w))) for w, ids in by_worker.items()),
                    output_field=UUIDField(),
                ),
                scheduled_at=now,
                status_changed_at=now,
                attempts=0,
                last_error="",
                next_attempt_at=None,
                updated_at=now,
            )
            record_changes(
                SessionStatusChange,
                (
                    {
                        "session_id": session_id,
                        "entity": SessionStatusChange.Entity.SESSION,
                        "from_status": locked[session_id][1],
                        "to_status": S.SCHEDULED,
                        "actor": actor_text,
                        "reason": reason,
                    }
                    for session_id, _, reason in placed
                ),
            )
            changes = [("session", pk, locked[pk][1], S.SCHEDULED, reason) for pk, _, reason in placed]
            publish_changes(changes, actor=actor_text)
    outcome.placed = [(session_id, worker_id) for session_id, worker_id, _ in placed]
    return outcome
