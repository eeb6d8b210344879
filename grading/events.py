"""Grading Engine CloudEvents (SPEC §5.2): grading completed or failed.

A completion makes the lablet reconciler look now (it re-reads the authoritative result from
the Grading Engine and stores the score report); a failure marks the GradingSession FAULTED
and the session still tears down.
"""

import logging
import re

from django.conf import settings

from grading.models import GradingSession
from grading.services import grading_session_update
from grading.states import GRADING_TERMINAL, GradingStatus
from lcm.fsm import InvalidTransition
from lcm.loops import enqueue

logger = logging.getLogger("lcm.grading.events")

ACTOR = "grading-event"
_VERSION_SUFFIX = re.compile(r"\.v\d+$")
KINDS = {"session.completed": "completed", "session.failed": "failed"}


def grading_session_id(event: dict) -> str:
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    return str(
        data.get("gradingSessionId") or data.get("sessionId") or data.get("id") or event.get("subject") or ""
    ).strip()


def handle_grading_event(event: dict) -> str:
    """Apply one Grading Engine event."""
    name = event["type"][len(settings.LCM_GRADING_EVENT_PREFIX) + 1 :]
    kind = KINDS.get(_VERSION_SUFFIX.sub("", name))
    if kind is None:
        return "ignored: unknown grading event type"
    external_id = grading_session_id(event)
    grading = GradingSession.objects.filter(grading_session_id=external_id).first() if external_id else None
    if grading is None:
        return "ignored: unknown grading session"
    if kind == "failed" and grading.status not in GRADING_TERMINAL:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        try:
            grading_session_update(
                grading,
                status=GradingStatus.FAULTED,
                error_message=str(data.get("error") or data.get("message") or "grading failed")[:2000],
                actor=ACTOR,
                reason=f"Grading Engine {event['type']}",
            )
        except InvalidTransition as exc:
            logger.info("grading event no longer applies: %s", exc.detail)
    enqueue("lablets", grading.lablet_session_id)
    return f"grading {kind}"
