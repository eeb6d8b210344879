"""Writers for grading sessions and score reports."""

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from grading.models import EvidenceCollection, EvidenceItem, GradingSession, Regrade, ScoreReport, ScoreSection
from grading.states import (
    GRADING_TERMINAL,
    GRADING_TRANSITIONS,
    REGRADE_FINISHED,
    REGRADE_TRANSITIONS,
    GradingStatus,
)
from lcm import loops
from lcm.events import publish_change
from lcm.fsm import InvalidTransition, actor_name, apply_transition, record_change
from sessions.models import LabletSession, SessionStatusChange
from sessions.services import lock_session, move_child, record_session_note
from sessions.states import SessionStatus

_GRADING_FIELDS = (
    "grading_session_id", "grading_part_id", "pod_id", "error_message", "release_pending", "engine_released_at",
)  # fmt: skip


def grading_session_create(session, *, actor, reason: str = "", **fields) -> GradingSession:
    """Create the GradingSession of a lablet session (called by the → GRADING transition)."""
    unknown = set(fields) - set(_GRADING_FIELDS)
    if unknown:
        raise ValidationError({name: ["is not a grading session field"] for name in sorted(unknown)})
    session_pk = session.pk if isinstance(session, LabletSession) else session
    with transaction.atomic():
        grading = GradingSession.objects.create(lablet_session_id=session_pk, **fields)
        record_change(
            SessionStatusChange,
            session_id=session_pk,
            entity=SessionStatusChange.Entity.GRADING_SESSION,
            from_status="",
            to_status=grading.status,
            actor=actor,
            reason=reason or "created",
        )
    publish_change("grading_session", grading.pk, "", grading.status, actor=actor_name(actor), reason=reason)
    return grading


def grading_session_update(grading, *, actor, status: str | None = None, reason: str = "", **fields):
    """Update a GradingSession's ids and, when `status` differs, move it forward (or to FAULTED)."""
    unknown = set(fields) - set(_GRADING_FIELDS)
    if unknown:
        raise ValidationError({name: ["is not a grading session field"] for name in sorted(unknown)})
    with transaction.atomic():
        locked = GradingSession.objects.select_for_update().get(pk=grading.pk)
        for name, value in fields.items():
            setattr(locked, name, value)
        previous = locked.status
        if status is not None:
            status = move_child(
                locked, status, choices=GradingStatus, table=GRADING_TRANSITIONS,
                entity=SessionStatusChange.Entity.GRADING_SESSION, actor=actor, reason=reason,
            )  # fmt: skip
        locked.save()
    if status is not None and status != previous:
        publish_change("grading_session", locked.pk, previous, status, actor=actor_name(actor), reason=reason)
    return locked


def _decimal(errors, name, value, *, required=True):
    if value is None or value == "":
        if required:
            errors[name] = ["is required"]
        return None
    if isinstance(value, bool):
        errors[name] = ["must be a number"]
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        errors[name] = ["must be a number"]
        return None
    if not number.is_finite() or number < 0 or number > Decimal("99999999"):
        errors[name] = ["must be a number between 0 and 99999999"]
        return None
    return number.quantize(Decimal("0.01"))


def _clean_scores(score, max_score, cut_score, errors: dict):
    """`(score, max_score, cut_score)` as Decimals; the score and cut score must not exceed the maximum."""
    score = _decimal(errors, "score", score)
    max_score = _decimal(errors, "max_score", max_score)
    cut_score = _decimal(errors, "cut_score", cut_score)
    if max_score is not None and max_score <= 0:
        errors["max_score"] = ["must be greater than 0"]
    if score is not None and max_score is not None and score > max_score and "max_score" not in errors:
        errors["score"] = ["must not exceed max_score"]
    if cut_score is not None and max_score is not None and cut_score > max_score and "max_score" not in errors:
        errors["cut_score"] = ["must not exceed max_score"]
    return score, max_score, cut_score


def _clean_section(index: int, section, errors: dict) -> ScoreSection | None:
    """One section as an unsaved ScoreSection, or None with its errors keyed `sections[i].<field>`."""
    section_errors: dict[str, list[str]] = {}
    if not isinstance(section, dict):
        errors[f"sections[{index}]"] = ["must be an object"]
        return None
    name = str(section.get("name") or "").strip()
    if not name:
        section_errors["name"] = ["is required"]
    s_score = _decimal(section_errors, "score", section.get("score"))
    s_max = _decimal(section_errors, "max_score", section.get("max_score"))
    weight = _decimal(section_errors, "weight", section.get("weight", 1))
    for key, messages in section_errors.items():
        errors[f"sections[{index}].{key}"] = messages
    if section_errors:
        return None
    passed = section.get("passed")
    return ScoreSection(
        position=index,
        name=name[:300],
        score=s_score,
        max_score=s_max,
        weight=weight,
        passed=None if passed is None else bool(passed),
    )


def _clean_sections(sections, errors: dict) -> list[ScoreSection]:
    if not isinstance(sections, (list, tuple)):
        errors["sections"] = ["must be a list"]
        return []
    cleaned = (_clean_section(index, section, errors) for index, section in enumerate(sections))
    return [section for section in cleaned if section is not None]


# A finished session's result is settled: a score report arriving now (a late or replayed write) is refused.
SCORELESS = {SessionStatus.TERMINATED, SessionStatus.ARCHIVED, SessionStatus.EXPIRED}


def score_report_create(
    session,
    *,
    actor,
    score,
    max_score,
    cut_score,
    sections=(),
    grading_session=None,
    submitted_at=None,
    manual: bool = False,
    regrade: bool = False,
) -> ScoreReport:
    """Store an immutable score report (+ sections) and copy PASS/FAIL to the session's `grade_result`.

    Raises ValidationError naming each bad field, or InvalidTransition (→ 409) for a session in `SCORELESS`
    (but an ARCHIVED one being re-graded, `regrade`: its new report is kept beside the earlier ones, SPEC §9).
    """
    errors: dict[str, list[str]] = {}
    score, max_score, cut_score = _clean_scores(score, max_score, cut_score, errors)
    clean_sections = _clean_sections(sections, errors)
    if errors:
        raise ValidationError(errors)
    passed = score >= cut_score
    with transaction.atomic():
        session_pk = session.pk if isinstance(session, LabletSession) else session
        locked = LabletSession.objects.select_for_update().get(pk=session_pk)
        if locked.status in SCORELESS and not (regrade and locked.status == SessionStatus.ARCHIVED):
            raise InvalidTransition(
                "session", locked.status, locked.status, [], detail=f"a {locked.status} session takes no score report"
            )
        report = ScoreReport.objects.create(
            lablet_session=locked,
            grading_session=grading_session,
            score=score,
            max_score=max_score,
            cut_score=cut_score,
            passed=passed,
            manual=manual,
            submitted_at=submitted_at or timezone.now(),
            created_by=actor_name(actor),
        )
        for section in clean_sections:
            section.report = report
        ScoreSection.objects.bulk_create(clean_sections)
        locked.grade_result = "PASS" if passed else "FAIL"
        locked.save(update_fields=["grade_result", "updated_at"])
        record_session_note(
            locked, actor=actor, reason=f"score report {score}/{max_score} (cut {cut_score}): {locked.grade_result}"
        )
    return report


# --- steps of a session's moves (registered with `sessions.services` by `GradingConfig.ready()`) --------------


def on_session_grading(locked, target, *, actor=None, grading_session=None, **_) -> None:
    """→ GRADING: the session's grading session, in the same transaction (`grading_session`: its fields)."""
    grading_session_create(locked, actor=actor, **(grading_session or {}))


def on_session_stopping(locked, target, *, actor=None, manual_score=None, **_) -> None:
    """→ STOPPING: the manual score report of a grading completed by hand, when one is given."""
    if manual_score:
        score_report_create(locked, actor=actor, manual=True, grading_session=locked.grading_session, **manual_score)


# The grading reconciler's name in the history: its own move out of GRADING closes its grading itself.
RECONCILER_ACTOR = "grading-reconciler"


def close_grading(locked, target, *, actor=None, manual_score=None, **_) -> None:
    """Leaving GRADING by hand (Complete Grading → STOPPING, Terminate) closes its GradingSession in the same move
    (SPEC §3.4): SUBMITTED with a manual score, else FAULTED saying why; its Grading Engine session is released at
    teardown (`release_engine`)."""
    if locked.status != SessionStatus.GRADING or actor_name(actor) == RECONCILER_ACTOR:
        return
    grading = GradingSession.objects.select_for_update().filter(lablet_session=locked).order_by("-created_at").first()
    if grading is None or grading.status in GRADING_TERMINAL:
        return
    if target == SessionStatus.STOPPING and manual_score:
        status, why = GradingStatus.SUBMITTED, "closed: grading completed by hand with a manual score"
    elif target == SessionStatus.STOPPING:
        status, why = GradingStatus.FAULTED, "closed: grading completed by hand without a score"
    else:
        status, why = GradingStatus.FAULTED, f"closed: the session went {target} during grading"
    fields = {"release_pending": bool(grading.grading_session_id)}
    if status == GradingStatus.FAULTED:
        fields["error_message"] = why
    grading_session_update(grading, actor=actor, status=status, reason=why, **fields)


# --- re-grades (SPEC §9) ---------------------------------------------------------------------------------


def regrade_request(session, *, actor) -> tuple[Regrade, bool]:
    """Ask for a re-grade of an ARCHIVED session from its evidence lab; returns it and whether it is new (a
    re-grade already under way is returned as it is). InvalidTransition (→ 409) naming why otherwise: the
    session is not ARCHIVED, or has no lab YAML in its evidence."""
    with transaction.atomic():
        locked = lock_session(session)
        if locked.status != SessionStatus.ARCHIVED:
            raise InvalidTransition(
                "session", locked.status, "REGRADE", [],
                detail=f"only an ARCHIVED session can be re-graded; this one is {locked.status}",
            )  # fmt: skip
        if not EvidenceItem.objects.filter(lablet_session=locked, kind="lab_yaml", expired_at__isnull=True).exists():
            collection = EvidenceCollection.objects.filter(lablet_session=locked).first()
            why = f" (evidence missing: {collection.reason})" if collection and collection.reason else ""
            raise InvalidTransition(
                "session", locked.status, "REGRADE", [],
                detail=f"this session has no lab_yaml evidence to re-grade from{why}",
            )  # fmt: skip
        running = Regrade.objects.filter(lablet_session=locked).exclude(status__in=REGRADE_FINISHED).first()
        if running is not None:
            return running, False
        regrade = Regrade.objects.create(lablet_session=locked, requested_by=actor_name(actor))
        record_session_note(locked, actor=actor, reason=f"re-grade {regrade.pk} requested")
        transaction.on_commit(lambda: loops.enqueue("regrades", regrade.pk))
    return regrade, True


def regrade_move(regrade, target: str, *, actor, reason: str, **fields) -> Regrade:
    """Move a re-grade along its table under its row lock (with `fields`), noted on the session's history."""
    with transaction.atomic():
        locked = Regrade.objects.select_for_update().get(pk=regrade.pk)
        previous = apply_transition(locked, REGRADE_TRANSITIONS, target, entity="regrade")
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.attempts, locked.next_attempt_at = 0, None
        if target in REGRADE_FINISHED:
            locked.finished_at = timezone.now()
        locked.save()
        session = lock_session(locked.lablet_session_id)
        record_session_note(session, actor=actor, reason=f"re-grade {previous} → {target}: {reason}"[:2000])
    publish_change("regrade", locked.pk, previous, target, actor=actor_name(actor), reason=reason)
    return locked


def regrade_record_failure(regrade, error: str, *, retry_at) -> None:
    """A failed re-grade pass: counted, retried at `retry_at`."""
    Regrade.objects.filter(pk=regrade.pk).update(
        attempts=regrade.attempts + 1, last_error=error[:2000], next_attempt_at=retry_at
    )
