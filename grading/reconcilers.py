"""The grading reconciler (SPEC §3.4): drives a GRADING session's GradingSession to a stored score report.

Desired state: a score report stored for the session (or the GradingSession FAULTED), then the
session moves on to STOPPING. Steps, each resumable: create the Grading Engine session with
the manager's own id (the GradingSession's UUID, so a retried create answers 409 and nothing
is made twice) and the pod from the lab's devices → ask it to grade (202) → poll the session
(a completion CloudEvent only makes the poll happen sooner) → store the report → submit.
"""

import contextlib
import logging
import math

from django.utils import timezone

from grading.clients.grading_engine import cut_score_of, find_part, grading_client, part_score, pod_from_devices
from grading.models import GradingSession
from grading.services import (
    RECONCILER_ACTOR,
    grading_session_create,
    grading_session_update,
    score_report_create,
)
from grading.states import GRADING_TERMINAL, GradingStatus
from lcm import http
from lcm.fsm import InvalidTransition
from lcm.reconcile import Result
from sessions.reconcilers import expire, grading_timed_out
from sessions.services import session_transition
from sessions.states import SessionStatus
from workers.models import SystemSettings

logger = logging.getLogger("lcm.grading.reconcilers")

ACTOR = RECONCILER_ACTOR
POLL_SECONDS = 1.0
G = GradingStatus
ENGINE_FAULTED = {"faulted", "failed", "error"}


def _grading_session(session) -> GradingSession:
    grading = session.grading_sessions.order_by("-created_at").first()
    if grading is None:  # GRADING always has one; recreate it if someone removed it by hand
        grading = grading_session_create(session, actor=ACTOR, reason="missing grading session recreated")
    return grading


def fault_grading(session, reason: str) -> None:
    """Mark the session's GradingSession FAULTED (grading timed out or failed); the session still tears down."""
    grading = session.grading_sessions.order_by("-created_at").first()
    if grading is not None and grading.status not in GRADING_TERMINAL:
        grading_session_update(grading, status=G.FAULTED, error_message=reason, actor=ACTOR, reason=reason)


def _to_stopping(session, reason: str) -> Result:
    try:
        session_transition(
            session, SessionStatus.STOPPING, actor=ACTOR, reason=reason, expected_status=SessionStatus.GRADING
        )
    except InvalidTransition as exc:
        return Result.done(f"moved on meanwhile: {exc.current}")
    return Result.requeue(0, "graded")


def on_session_grading(session, now) -> Result:
    """The lablet reconciler's step for a GRADING session (registered by `GradingConfig.ready()`): grade it,
    or fault the grading and expire the session when grading took too long."""
    if grading_timed_out(session, now):
        fault_grading(session, "grading timed out")
        return expire(session, "grading timed out")
    return reconcile_grading(session)


def pass_mark(session, engine, part_id: str, max_score: int) -> int:
    """SPEC §3.4: the Grading Engine's cut score when it has one for the form, else the definition's
    `pass_percent`, else `SystemSettings.pass_percent`, of the maximum score."""
    try:
        cut = cut_score_of(engine.get_ruleset(part_id))
    except http.NotFound:
        cut = None
    if cut is not None:
        return min(cut, max_score)
    percent = session.definition.pass_percent
    if percent is None:
        percent = SystemSettings.load().pass_percent
    return math.ceil(max_score * percent / 100)


def reconcile_grading(session) -> Result:
    """One pass of grading for a session in GRADING: create the engine session, ask it to grade, poll, store."""
    grading = _grading_session(session)
    if grading.status == G.FAULTED:
        return _to_stopping(session, f"grading faulted: {grading.error_message}; tearing down without a score")
    if session.score_reports.filter(grading_session=grading).exists():
        return _to_stopping(session, "score report stored")
    engine = grading_client()
    part_id = session.definition.form_qualified_name or session.definition.name
    if not grading.grading_session_id:
        grading = _create_engine_session(session, grading, engine, part_id)
    if grading.status in (G.PENDING, G.COLLECTING):
        engine.grade(str(grading.pk), part_id)
        grading_session_update(grading, actor=ACTOR, status=G.GRADING, reason="grading requested")
        return Result.requeue(POLL_SECONDS, "grading requested")
    return _collect_score(session, grading, engine, part_id)


def _create_engine_session(session, grading, engine, part_id: str):
    """The Grading Engine session, made with our grading session's id (a retried create is refused, not doubled)."""
    external_id = str(grading.pk)
    user_session = session.user_sessions.order_by("-created_at").first()
    devices = user_session.devices if user_session else []
    pod = pod_from_devices(f"pod-{session.pk}", devices, collector="lcm")
    try:
        engine.create_session(
            session.owner.ljust(3, "_"),
            session_id=external_id,
            lds_session_id=(user_session.lds_session_id if user_session else "") or f"lcm-{session.pk}",
            lds_environment="lcm",
            part_id=part_id,
            pod=pod,
        )
    except (http.Conflict, http.BadRequest) as refused:
        # A pass whose answer was lost created it already: the engine refuses the id again (it answers
        # 400 "already exists", not 409). Carry on if it is there; otherwise the refusal was real.
        try:
            engine.get_session(external_id)
        except http.NotFound:
            raise refused from None
    return grading_session_update(
        grading,
        actor=ACTOR,
        status=G.COLLECTING,
        grading_session_id=external_id,
        grading_part_id=part_id,
        pod_id=pod["id"],
        reason="Grading Engine session created",
    )


def _collect_score(session, grading, engine, part_id: str) -> Result:
    """Poll the engine; store the score report when it has one, submit it, and move the session on."""
    external_id = str(grading.pk)
    part = find_part(engine.get_session(external_id), part_id)
    status = str(part.get("status") or "").lower()
    if status in ENGINE_FAULTED:
        reason = str(part.get("statusReason") or "the Grading Engine faulted")
        grading_session_update(grading, actor=ACTOR, status=G.FAULTED, error_message=reason[:2000], reason=reason)
        return _to_stopping(session, f"grading faulted: {reason}; tearing down without a score")
    score = part_score(part)
    if score is None:
        return Result.requeue(POLL_SECONDS, f"grading ({status or 'unknown'})")
    score_report_create(
        session,
        actor=ACTOR,
        score=score.score,
        max_score=max(score.max_score, 1),
        cut_score=pass_mark(session, engine, part_id, max(score.max_score, 1)),
        grading_session=grading,
        sections=[
            {
                "name": s.id,
                "score": s.score,
                "max_score": max(s.max_score, 0),
                "passed": None if s.cut_score is None else s.score >= s.cut_score,
            }
            for s in score.sections
        ],  # fmt: skip
    )
    if grading.status == G.GRADING:
        grading = grading_session_update(grading, actor=ACTOR, status=G.REVIEWING, reason="score report received")
    try:
        engine.submit(external_id, part_id)
        grading_session_update(grading, actor=ACTOR, status=G.SUBMITTED, reason="submitted")
    except (http.BadRequest, http.Conflict) as exc:
        logger.info("grading session %s not submitted: %s", external_id, exc)
    return _to_stopping(session, f"score {score.score}/{score.max_score} stored")


def release_engine(session) -> str | None:
    """The lablet reconciler's teardown step for gradings closed by hand (registered by `GradingConfig.ready()`):
    release their Grading Engine session: its part is removed, which stops a grading in progress and drops the
    pod, so the engine no longer reaches the lab. None when nothing is left to release."""
    for grading in session.grading_sessions.filter(release_pending=True):
        if grading.grading_session_id:
            with contextlib.suppress(http.NotFound):  # removed already (a pass whose answer was lost)
                grading_client().remove_part(grading.grading_session_id, grading.grading_part_id)
        grading_session_update(
            grading, actor=ACTOR, release_pending=False, engine_released_at=timezone.now(),
            reason="Grading Engine session released",
        )  # fmt: skip
    return None
