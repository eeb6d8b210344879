"""LDS CloudEvents (SPEC §5.2): the candidate logged in, paused, finished.

Handlers are idempotent and go through the services; an event for an unknown session, or
one that no longer applies to the session's state, is acknowledged and changes nothing.
"""

import logging
import re

from django.conf import settings

from lcm.fsm import InvalidTransition
from sessions.models import UserSession
from sessions.services import session_transition, user_session_update
from sessions.states import SessionStatus, UserSessionStatus

logger = logging.getLogger("lcm.sessions.events")

ACTOR = "lds-event"
_VERSION_SUFFIX = re.compile(r"\.v\d+$")

# Event names (after the prefix, without the version) → what happened.
KINDS = {
    "session.running": "running",
    "session.started": "running",
    "session.restarted": "running",
    "session.paused": "paused",
    "session.ended": "ended",
    "session.userfinished": "ended",
    "session.user-finished": "ended",
    "session.finalized": "finalized",
}


def event_kind(event_type: str) -> str | None:
    name = event_type[len(settings.LCM_LDS_EVENT_PREFIX) + 1 :]
    return KINDS.get(_VERSION_SUFFIX.sub("", name))


def lds_session_id(event: dict) -> str:
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    return str(data.get("sessionId") or data.get("aggregateId") or event.get("subject") or "").strip()


def _try(fn, *args, **kwargs) -> bool:
    try:
        fn(*args, **kwargs)
    except InvalidTransition as exc:
        logger.info("LDS event no longer applies: %s", exc.detail)
        return False
    return True


def handle_lds_event(event: dict) -> str:
    """Apply one LDS event to the UserSession and its lablet session."""
    kind = event_kind(event["type"])
    if kind is None:
        return "ignored: unknown LDS event type"
    lds_id = lds_session_id(event)
    user_session = (
        UserSession.objects.select_related("lablet_session__definition").filter(lds_session_id=lds_id).first()
        if lds_id
        else None
    )
    if user_session is None:
        return "ignored: unknown LDS session"
    handler = _HANDLERS.get(kind)
    return handler(user_session, f"LDS {event['type']}") if handler else "recorded"


def _on_running(user_session, reason: str) -> str:
    session = user_session.lablet_session
    if user_session.status in (UserSessionStatus.PROVISIONED, UserSessionStatus.PAUSED):
        _try(user_session_update, user_session, status=UserSessionStatus.ACTIVE, actor=ACTOR, reason=reason)
    moved = session.status == SessionStatus.READY and _try(
        session_transition, session, SessionStatus.RUNNING, actor=ACTOR, reason=reason,
        expected_status=SessionStatus.READY,
    )  # fmt: skip
    return "session running" if moved else "user session active"


def _on_paused(user_session, reason: str) -> str:
    if user_session.status == UserSessionStatus.ACTIVE:
        _try(user_session_update, user_session, status=UserSessionStatus.PAUSED, actor=ACTOR, reason=reason)
    return "user session paused"


def _on_ended(user_session, reason: str) -> str:
    session = user_session.lablet_session
    if user_session.status in (UserSessionStatus.ACTIVE, UserSessionStatus.PAUSED):
        _try(user_session_update, user_session, status=UserSessionStatus.ENDED, actor=ACTOR, reason=reason)
    if session.status == SessionStatus.RUNNING:
        target = SessionStatus.COLLECTING if session.definition.grading_enabled else SessionStatus.STOPPING
        if _try(session_transition, session, target, actor=ACTOR, reason=reason, expected_status=SessionStatus.RUNNING):
            return f"session {target.lower()}"
    return "user session ended"


# What each kind of LDS event does; the other kinds (e.g. `finalized`) are only recorded.
_HANDLERS = {"running": _on_running, "paused": _on_paused, "ended": _on_ended}
