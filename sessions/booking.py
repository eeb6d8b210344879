"""Booking a lablet session and extending its timeslot (SPEC §3.1, §2.2 `extend`): the checks on what a
caller asks for (definition, owner, reservation, timeslot) before a session is written."""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from lcm.errors import Conflict
from lcm.events import publish_change
from lcm.fsm import InvalidTransition, actor_name, record_change
from scheduling.admission import CapacityRefused, admission_lock, admission_mode, capacity_check
from sessions.models import LabletDefinition, LabletSession, SessionStatusChange
from sessions.services import lock_session, record_session_note
from sessions.states import DefinitionStatus, SessionStatus
from workers.models import SystemSettings

S = SessionStatus

# Sessions whose timeslot can still be extended (they have not finished running).
# SPEC §3.4a: every state before COLLECTING (once the candidate's work is being collected, time is over).
EXTENDABLE = {S.PENDING, S.SCHEDULED, S.INSTANTIATING, S.READY, S.RUNNING}

# How far ahead a booking or an extension may end (SPEC §12: dates LCM cannot represent are refused at the
# door). A year and a day covers any exam calendar; it also keeps every stored timeslot far from
# `datetime.max`, so adding minutes to one (pages, reconcilers, LDS) can never overflow.
BOOKING_HORIZON = timedelta(days=366)


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
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past datetime.max in UTC
        errors[name] = ["is out of the supported date range"]
        return None


def _within_horizon(errors, name, value, now: datetime) -> bool:
    """False (with an error naming `name`) when `value` is more than `BOOKING_HORIZON` after `now`."""
    if value is not None and value - now > BOOKING_HORIZON:
        errors[name] = [f"must be at most {BOOKING_HORIZON.days} days ahead"]
        return False
    return True


def _definition_for_booking(definition, errors: dict):
    """The definition to book (given or by id), or None with an error; it must be ACTIVE."""
    if not isinstance(definition, LabletDefinition):
        try:
            definition = LabletDefinition.objects.get(pk=definition)
        except (LabletDefinition.DoesNotExist, ValueError, ValidationError):
            errors["definition_id"] = [f"no definition with id {definition!r}"]
            definition = None
    if definition is not None and definition.status != DefinitionStatus.ACTIVE:
        errors["definition_id"] = [f"definition {definition} is {definition.status}; sessions need an ACTIVE one"]
    return definition


def _clean_owner_and_reservation(owner, reservation_id, errors: dict) -> tuple[str, str | None]:
    owner = str(owner or "").strip()
    if not owner:
        errors["owner"] = ["is required"]
    elif len(owner) > 200:
        errors["owner"] = ["must be at most 200 characters"]
    reservation_id = str(reservation_id).strip() if reservation_id not in (None, "") else None
    if reservation_id and len(reservation_id) > 200:
        errors["reservation_id"] = ["must be at most 200 characters"]
    return owner, reservation_id


def _clean_timeslot(definition, timeslot_start, timeslot_end, now: datetime, errors: dict):
    """`(start, end)`: start defaults to now (ASAP), end to the longest timeslot the definition allows."""
    start = _as_aware(errors, "timeslot_start", timeslot_start)
    end = _as_aware(errors, "timeslot_end", timeslot_end)
    # Beyond the horizon counts as not given, so no arithmetic below can overflow.
    start = start if _within_horizon(errors, "timeslot_start", start, now) else None
    end = end if _within_horizon(errors, "timeslot_end", end, now) else None
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
    return start, end


def _booked_conflict(reservation_id) -> Conflict | None:
    """The Conflict naming the session that already booked `reservation_id`, if one did."""
    existing = LabletSession.objects.filter(reservation_id=reservation_id).values_list("pk", flat=True).first()
    if not existing:
        return None
    return Conflict(
        f"reservation {reservation_id!r} is already booked as session {existing}",
        existing_id=existing,
        field="reservation_id",
    )


def _admit(definition, start, end, mode: str, now):
    """The capacity verdict for one more session (None when admission is off), under the admission lock until the
    caller's transaction ends; CapacityRefused when `mode` is refuse and it does not fit."""
    if mode == "off":
        return None
    admission_lock()
    verdict = capacity_check(definition, start, end, 1, now=now)
    if not verdict.fits and mode == "refuse":
        raise CapacityRefused(verdict)
    return verdict


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
    on_capacity: str | None = None,
) -> LabletSession:
    """Book a session (SPEC §3.1); result PENDING.

    Raises ValidationError naming each bad field, or Conflict with the existing session's id
    when `reservation_id` was booked already (so an upstream retry is idempotent). Admission (SPEC §10,
    `on_capacity`, else `SystemSettings.admission`): `refuse` raises CapacityRefused (a Conflict with the
    verdict) when the fleet cannot hold it, `warn` books anyway, `off` skips the check; the verdict (None when
    not checked) is on the returned session as `capacity_verdict`.
    """
    errors: dict[str, list[str]] = {}
    now = now or timezone.now()
    definition = _definition_for_booking(definition, errors)
    owner, reservation_id = _clean_owner_and_reservation(owner, reservation_id, errors)
    start, end = _clean_timeslot(definition, timeslot_start, timeslot_end, now, errors)
    if errors:
        raise ValidationError(errors)
    conflict = _booked_conflict(reservation_id) if reservation_id else None
    if conflict:
        raise conflict
    try:
        with transaction.atomic():
            verdict = _admit(definition, start, end, admission_mode(on_capacity), now)
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
        conflict = _booked_conflict(reservation_id)
        if conflict:
            raise conflict from None
        raise
    publish_change("session", session.pk, "", S.PENDING, actor=actor_name(actor), reason=reason or "booked")
    session.capacity_verdict = verdict
    return session


def _check_extension_ceiling(locked, new_end, *, reason: str, is_admin: bool) -> None:
    """Refuse a timeslot longer than an instructor may give (naming the limit); an admin needs a reason."""
    total = int((new_end - locked.timeslot_start).total_seconds() // 60)
    extra = SystemSettings.load().max_extension_minutes
    ceiling = locked.definition.max_duration_minutes + extra
    if total <= ceiling:
        return
    if not is_admin:
        raise ValidationError(
            {
                "timeslot_end": [
                    f"the timeslot would last {total} minutes; instructors may extend to at most {ceiling} "
                    f"(the definition's {locked.definition.max_duration_minutes} + {extra}); ask an admin for more"
                ]
            }
        )
    if not reason.strip():
        raise ValidationError({"reason": [f"an extension beyond {ceiling} minutes needs a reason"]})


def session_extend(session, new_end, *, actor, reason: str = "", is_admin: bool = False) -> LabletSession:
    """Move the timeslot end later (SPEC §2.2 `extend`, §3.4a), in any state before COLLECTING.

    Instructors may reach the definition's `max_duration_minutes` plus `SystemSettings.max_extension_minutes`;
    an admin may go beyond, saying why. Capacity needs no new check: a session holds its capacity until its
    lab is stopped, so the extra time is already covered. A session with an LDS session gets the new end
    there too: the reconciler converges LDS's end on `timeslot_end` (`sessions.reconcilers`).
    """
    errors: dict[str, list[str]] = {}
    new_end = _as_aware(errors, "timeslot_end", new_end)
    if new_end is None and not errors:
        errors["timeslot_end"] = ["is required"]
    _within_horizon(errors, "timeslot_end", new_end, timezone.now())
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        locked = lock_session(session)
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
        _check_extension_ceiling(locked, new_end, reason=reason, is_admin=is_admin)
        old_end = locked.timeslot_end
        locked.timeslot_end = new_end
        locked.save(update_fields=["timeslot_end", "updated_at"])
        note = f"timeslot_end {old_end.isoformat()} → {new_end.isoformat()}" + (f": {reason}" if reason else "")
        record_session_note(locked, actor=actor, reason=note)
    publish_change("session", locked.pk, locked.status, locked.status, actor=actor_name(actor), reason=note)
    return locked
