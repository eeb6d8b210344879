"""Exams (SPEC §8): a class's roster booked in one step, driven together, its results exported.

- `parse_roster(text)`: a pasted or uploaded roster. With a header row, its columns are named (`owner`,
  optional `reservation_id`, any order, case-insensitive); without one, each line is `owner[,reservation_id]`,
  so a bare list of owners one per line works too. Blank lines are skipped; "row N" in a message is the N-th
  candidate (the header is not a row). At most `MAX_CANDIDATES` rows and `MAX_ROSTER_CHARS` characters.
- `exam_book(...)`: all or nothing. Every row valid (owner required, at most 200 characters, no control
  characters; reservation ids unique within the roster and not booked before; an owner at most once), the
  timeslot valid as for one session (`sessions.booking`), then, under the admission lock, the capacity
  check (`scheduling.admission`): refused (`CapacityRefused`, 409) when the mode is `refuse` and it does not
  fit. The exam, its sessions and their history rows are inserted in one transaction, in bulk.
- `exam_action(...)`: start | extend | finish | terminate on every session of the exam, each through the
  session's own service; a session the action does not apply to is "refused" and left as it was.
- `exam_counts`, `exam_roster`, `results_csv`: reads, in a fixed number of queries.
"""

import csv
import io
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Prefetch
from django.utils import timezone

from lcm.errors import Conflict, first_error_line
from lcm.events import publish_changes
from lcm.fsm import InvalidTransition, actor_name, record_changes
from scheduling.admission import CapacityRefused, Verdict, admission_lock, admission_mode, capacity_check
from sessions.booking import (
    EXTENDABLE,
    _clean_owner_and_reservation,
    _clean_timeslot,
    _definition_for_booking,
    session_extend,
)
from sessions.models import Exam, LabletSession, SessionStatusChange
from sessions.services import session_terminate, session_transition
from sessions.states import SessionStatus

__all__ = [
    "ActionResult",
    "CapacityRefused",
    "ExamBooking",
    "exam_action",
    "exam_book",
    "exam_counts",
    "exam_roster",
    "parse_roster",
    "results_csv",
]

S = SessionStatus
MAX_CANDIDATES = 1000
MAX_ROSTER_CHARS = 200_000
ROSTER_COLUMNS = ("owner", "reservation_id")
EXAM_ACTIONS = ("start", "extend", "finish", "terminate")
MAX_EXTEND_MINUTES = 24 * 60


@dataclass
class ExamBooking:
    """What `exam_book` made: the exam, its sessions (roster order) and the capacity verdict (None: not checked)."""

    exam: Exam
    sessions: list
    verdict: Verdict | None


@dataclass(frozen=True)
class ActionResult:
    """One session's outcome of a bulk action: "ok", or "refused" (nothing changed) with why."""

    session_id: str
    owner: str
    result: str
    detail: str

    def as_dict(self) -> dict:
        return {"session_id": self.session_id, "owner": self.owner, "result": self.result, "detail": self.detail}


# --- the roster -----------------------------------------------------------------------------


def _bad_characters(value: str) -> bool:
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def clean_candidates(candidates) -> tuple[list[dict], dict[str, list[str]]]:
    """The candidates as `{owner, reservation_id}` (stripped; no id = None), and the errors keyed
    `candidates[i].owner` / `candidates[i].reservation_id` (i from 0; messages say "row i+1")."""
    errors: dict[str, list[str]] = {}
    if not isinstance(candidates, list | tuple) or not candidates:
        return [], {"candidates": ["at least one candidate is required"]}
    if len(candidates) > MAX_CANDIDATES:
        return [], {"candidates": [f"at most {MAX_CANDIDATES} candidates per exam (got {len(candidates)})"]}
    clean, owners, reservations = [], {}, {}
    for index, row in enumerate(candidates):
        row_errors: dict[str, list[str]] = {}
        row = row if isinstance(row, dict) else {"owner": row}
        raw_owner, raw_reservation = row.get("owner"), row.get("reservation_id")
        owner, reservation = _clean_owner_and_reservation(
            raw_owner if isinstance(raw_owner, str) or raw_owner is None else "",
            raw_reservation if isinstance(raw_reservation, str) or raw_reservation is None else "?",
            row_errors,
        )
        if owner and "owner" not in row_errors and _bad_characters(owner):
            row_errors["owner"] = ["holds control characters or characters that cannot be stored"]
        if reservation and "reservation_id" not in row_errors and _bad_characters(reservation):
            row_errors["reservation_id"] = ["holds control characters or characters that cannot be stored"]
        if "owner" not in row_errors and owner in owners:
            row_errors["owner"] = [f"{owner!r} is already on row {owners[owner] + 1}"]
        if reservation and "reservation_id" not in row_errors and reservation in reservations:
            row_errors["reservation_id"] = [f"{reservation!r} repeats row {reservations[reservation] + 1}"]
        owners.setdefault(owner, index)
        if reservation:
            reservations.setdefault(reservation, index)
        for name, messages in row_errors.items():
            errors[f"candidates[{index}].{name}"] = [f"row {index + 1}: {name} {m}" for m in messages]
        clean.append({"owner": owner, "reservation_id": reservation})
    return clean, errors


def parse_roster(text: str) -> tuple[list[dict], dict[str, list[str]]]:
    """A roster's text (CSV: header `owner[,reservation_id]`, or headerless `owner[,reservation_id]` lines) as
    `(candidates, errors)`; see the module docstring. Errors name the row as the user counts it."""
    text = text or ""
    if len(text) > MAX_ROSTER_CHARS:
        return [], {"roster": [f"is longer than {MAX_ROSTER_CHARS} characters"]}
    try:
        rows = [row for row in csv.reader(io.StringIO(text.lstrip("\ufeff"))) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        return [], {"roster": [f"is not CSV: {exc}"]}
    columns = list(ROSTER_COLUMNS)
    if rows and rows[0] and rows[0][0].strip().lower() in ROSTER_COLUMNS:
        header = [cell.strip().lower() for cell in rows.pop(0)]
        unknown = [name for name in header if name not in ROSTER_COLUMNS]
        if unknown or "owner" not in header or len(set(header)) != len(header):
            shown = ", ".join(repr(n[:40]) for n in unknown) or "a repeated or missing owner column"
            return [], {"roster": [f"header has {shown}; expected owner[,reservation_id]"]}
        columns = header
    if len(rows) > MAX_CANDIDATES:
        return [], {"roster": [f"has {len(rows)} rows; at most {MAX_CANDIDATES} candidates per exam"]}
    candidates, errors = [], {}
    for index, row in enumerate(rows):
        if len(row) > len(columns):
            errors[f"candidates[{index}].owner"] = [f"row {index + 1}: has {len(row)} columns; expected {columns}"]
        values = dict(zip(columns, row, strict=False))
        candidates.append({"owner": values.get("owner", ""), "reservation_id": values.get("reservation_id") or None})
    if not candidates:
        return [], {"roster": ["has no candidates"]}
    clean, row_errors = clean_candidates(candidates)
    return clean, {**row_errors, **errors}


# --- booking --------------------------------------------------------------------------------


def _already_booked(candidates: list[dict], errors: dict) -> None:
    """Errors for the reservation ids some session holds already (one query)."""
    ids = [c["reservation_id"] for c in candidates if c["reservation_id"]]
    if not ids:
        return
    booked = dict(LabletSession.objects.filter(reservation_id__in=ids).values_list("reservation_id", "pk"))
    for index, candidate in enumerate(candidates):
        existing = booked.get(candidate["reservation_id"])
        if existing:
            errors.setdefault(f"candidates[{index}].reservation_id", []).append(
                f"row {index + 1}: reservation {candidate['reservation_id']!r} is already booked as session {existing}"
            )


def _clean_exam(name, definition, timeslot_start, timeslot_end, candidates, on_capacity, now):
    errors: dict[str, list[str]] = {}
    name = str(name or "").strip()
    if not name:
        errors["name"] = ["is required"]
    elif len(name) > 200 or _bad_characters(name):
        errors["name"] = ["must be at most 200 printable characters"]
    if on_capacity not in (None, "", *("refuse", "warn", "off")):
        errors["on_capacity"] = ["must be refuse or warn"]
    definition = _definition_for_booking(definition, errors)
    start, end = _clean_timeslot(definition, timeslot_start, timeslot_end, now, errors)
    clean, row_errors = clean_candidates(candidates)
    errors.update(row_errors)
    if not row_errors:
        _already_booked(clean, errors)
    if errors:
        raise ValidationError(errors)
    return name, definition, start, end, clean


def _insert(name, definition, start, end, clean, notes, *, actor, reason, now):
    """The exam, its PENDING sessions and their history rows, three bulk INSERTs (inside the caller's transaction)."""
    who = actor_name(actor)
    exam = Exam.objects.create(
        name=name, definition=definition, timeslot_start=start, timeslot_end=end, notes=str(notes or ""),
        created_by=who,
    )  # fmt: skip
    sessions = LabletSession.objects.bulk_create(
        LabletSession(
            definition=definition,
            definition_version=definition.version,
            owner=c["owner"],
            reservation_id=c["reservation_id"],
            timeslot_start=start,
            timeslot_end=end,
            exam=exam,
            created_by=who,
            status_changed_at=now,
        )  # fmt: skip
        for c in clean
    )
    record_changes(
        SessionStatusChange,
        [
            {
                "session_id": s.pk,
                "entity": SessionStatusChange.Entity.SESSION,
                "to_status": S.PENDING,
                "actor": actor,
                "reason": reason,
            }  # fmt: skip
            for s in sessions
        ],
    )
    return exam, sessions


def exam_book(
    *,
    name,
    definition,
    timeslot_start,
    timeslot_end,
    candidates,
    actor,
    on_capacity: str | None = None,
    notes: str = "",
    now=None,
) -> ExamBooking:
    """Book an exam: every candidate's session or none (see the module docstring).

    Raises ValidationError naming each bad field or row, or CapacityRefused (a Conflict, 409) with the verdict.
    """
    now = now or timezone.now()
    name, definition, start, end, clean = _clean_exam(
        name, definition, timeslot_start, timeslot_end, candidates, on_capacity, now
    )
    mode = admission_mode(on_capacity)
    who = actor_name(actor)
    reason = f"booked for exam {name}"
    try:
        with transaction.atomic():
            admission_lock()
            verdict = capacity_check(definition, start, end, len(clean), now=now) if mode != "off" else None
            if verdict is not None and not verdict.fits and mode == "refuse":
                raise CapacityRefused(verdict)
            exam, sessions = _insert(name, definition, start, end, clean, notes, actor=actor, reason=reason, now=now)
    except IntegrityError:
        # A reservation id booked by someone else between the check and the insert.
        errors: dict = {}
        _already_booked(clean, errors)
        if errors:
            raise ValidationError(errors) from None
        raise
    publish_changes([("session", s.pk, "", S.PENDING, reason) for s in sessions], actor=who)
    return ExamBooking(exam=exam, sessions=sessions, verdict=verdict)


# --- bulk actions -----------------------------------------------------------------------------


def _act(session, action: str, *, actor, minutes, reason, is_admin) -> str:
    """Run one action on one session through its service; returns the detail of an "ok"."""
    label = {"start": "Start", "finish": "Finish", "terminate": "Terminate", "extend": "Extend"}[action]
    why = reason or f"{label} for the whole exam"
    if action == "start":
        session_transition(session, S.RUNNING, actor=actor, reason=why, expected_status=S.READY)
        return "RUNNING"
    if action == "finish":
        session_transition(session, S.COLLECTING, actor=actor, reason=why, expected_status=S.RUNNING)
        return "COLLECTING: collected, then graded"
    if action == "terminate":
        session_terminate(session, actor=actor, reason=why)
        return "TERMINATED: teardown follows"
    extended = session_extend(
        session, session.timeslot_end + timedelta(minutes=minutes), actor=actor, reason=reason, is_admin=is_admin
    )
    return f"ends {extended.timeslot_end:%Y-%m-%d %H:%M} UTC"


_APPLIES = {
    "start": ({S.READY}, "Start applies to READY sessions"),
    "finish": ({S.RUNNING}, "Finish applies to RUNNING sessions"),
    "terminate": (set(S.values) - {S.TERMINATED, S.ARCHIVED}, "it has already ended"),
    "extend": (EXTENDABLE, "only sessions before COLLECTING can be extended"),
}


def exam_action(exam, action: str, *, actor, minutes=None, reason: str = "", is_admin: bool = False) -> list:
    """`action` (start | extend | finish | terminate) on every session of `exam`, each through its service.

    Extend needs `minutes` (1 … 1440), added to each session's own end, within the instructors' ceiling
    unless `is_admin`. Returns one `ActionResult` per session (owner order); a refused one changed nothing.
    Raises ValidationError for an unknown action or bad minutes (nothing done then).
    """
    action = str(action or "").strip().lower()
    if action not in EXAM_ACTIONS:
        raise ValidationError({"action": [f"must be one of {', '.join(EXAM_ACTIONS)}"]})
    bad_minutes = isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 < minutes <= MAX_EXTEND_MINUTES
    if action == "extend" and bad_minutes:
        raise ValidationError({"minutes": [f"extend needs minutes, a whole number from 1 to {MAX_EXTEND_MINUTES}"]})
    applies, not_here = _APPLIES[action]
    results = []
    for session in exam.sessions.select_related("definition").order_by("owner", "pk"):
        if session.status not in applies:
            results.append(ActionResult(str(session.pk), session.owner, "refused", f"{session.status}: {not_here}"))
            continue
        try:
            detail = _act(session, action, actor=actor, minutes=minutes, reason=reason, is_admin=is_admin)
        except InvalidTransition as exc:
            results.append(ActionResult(str(session.pk), session.owner, "refused", exc.detail or str(exc)))
        except (ValidationError, Conflict) as exc:
            results.append(ActionResult(str(session.pk), session.owner, "refused", first_error_line(exc)))
        else:
            results.append(ActionResult(str(session.pk), session.owner, "ok", detail))
    if action == "extend" and any(r.result == "ok" for r in results):
        _follow_latest_end(exam)
    return results


def _follow_latest_end(exam) -> None:
    """After an extension the exam's timeslot ends with its latest session (pages show the exam's end)."""
    latest = LabletSession.objects.filter(exam=exam).aggregate(end=Max("timeslot_end"))["end"]
    if latest and latest > exam.timeslot_end:
        Exam.objects.filter(pk=exam.pk).update(timeslot_end=latest)
        exam.timeslot_end = latest


# --- reads ----------------------------------------------------------------------------------


def exam_counts(exam) -> dict[str, int]:
    """`{status: count}` of the exam's sessions, every status present (one query)."""
    counts = dict.fromkeys(S.values, 0)
    for row in LabletSession.objects.filter(exam=exam).order_by().values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    return counts


_TIMED = {S.PENDING, S.SCHEDULED, S.INSTANTIATING, S.READY, S.RUNNING}


def exam_sessions(exam):
    """The exam's sessions with their score reports prefetched (two queries), owner order."""
    # The grading app's reports, reached through their relation (sessions never imports grading).
    return exam.sessions.order_by("owner", "pk").prefetch_related(Prefetch("score_reports"))


def exam_roster(exam, *, now=None) -> list[dict]:
    """One row per session: id, owner, reservation id, status, timeslot, seconds left (while it can still run),
    score, max score, percent, result, started and ended (two queries whatever the roster's size)."""
    now = now or timezone.now()
    rows = []
    for session in exam_sessions(exam):
        report = session.score_report
        left = max(0, int((session.timeslot_end - now).total_seconds())) if session.status in _TIMED else None
        percent = round(float(report.score / report.max_score * 100), 1) if report and report.max_score else None
        rows.append(
            {
                "id": session.pk, "owner": session.owner, "reservation_id": session.reservation_id,
                "status": session.status, "timeslot_start": session.timeslot_start,
                "timeslot_end": session.timeslot_end, "time_left_seconds": left,
                "score": report.score if report else None, "max_score": report.max_score if report else None,
                "percent": percent, "result": session.grade_result, "started_at": session.started_at,
                "ended_at": session.ended_at,
            }
        )  # fmt: skip
    return rows


RESULT_COLUMNS = (
    "owner", "reservation_id", "session_id", "status", "score", "max_score", "percent", "result", "started_at",
    "ended_at",
)  # fmt: skip
# A cell a spreadsheet would read as a formula is made text (the rule of grading.export, for the same reason:
# owners come from outside).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    text = "" if value is None else (value.isoformat() if hasattr(value, "isoformat") else str(value))
    return f"'{text}" if text.startswith(_FORMULA_PREFIXES) else text


def results_csv(exam) -> str:
    """The exam's results, one CSV row per session (`RESULT_COLUMNS`)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RESULT_COLUMNS)
    for row in exam_roster(exam):
        writer.writerow(
            _cell(v)
            for v in (
                row["owner"],
                row["reservation_id"],
                row["id"],
                row["status"],
                row["score"],
                row["max_score"],
                row["percent"],
                row["result"],
                row["started_at"],
                row["ended_at"],
            )  # fmt: skip
        )
    return out.getvalue()
