"""What the sessions app announces (SPEC §11, `lcm.notifications`): the end of a session, once.

A session ends when it reaches ARCHIVED, TERMINATED or EXPIRED; its notice is `session.failed` when LCM gave
up on it (end reason FAILED), `session.ended` otherwise. The notice's key is the session, so a session that
expired and later archives (or is terminated) is announced once.
"""

from lcm.notifications import Notice
from sessions.models import LabletSession
from sessions.states import EndReason, SessionStatus

S = SessionStatus
ENDS = (S.ARCHIVED, S.TERMINATED, S.EXPIRED)
KINDS = {
    "session.ended": "A session ended (archived, terminated or expired)",
    "session.failed": "A session ended FAILED (LCM gave up on it, or its worker was terminated)",
}


def session_end_notices(change: dict) -> list[Notice]:
    """The notice of a session's end (`lcm.notifications.register_trigger` for session → ENDS)."""
    session = LabletSession.objects.select_related("definition", "worker").filter(pk=change["id"]).first()
    if session is None:
        return []
    failed = session.end_reason == EndReason.FAILED
    kind = "session.failed" if failed else "session.ended"
    how = "failed" if failed else f"ended {session.status}"
    reason = change.get("reason") or session.end_reason_detail
    return [
        Notice(
            kind=kind,
            subject=f"sessions/{session.pk}",
            summary=f"Session of {session.owner} ({session.definition.name}) {how}"
            + (f": {reason}" if failed and reason else ""),
            key=f"session-end:{session.pk}",
            link=f"/sessions/{session.pk}/",
            data={
                "session_id": str(session.pk),
                "owner": session.owner,
                "definition": f"{session.definition.name} {session.definition_version}",
                "status": session.status,
                "end_reason": session.end_reason,
                "reason": reason,
                "worker": session.worker.name if session.worker else None,
                "timeslot_start": session.timeslot_start.isoformat(),
                "timeslot_end": session.timeslot_end.isoformat(),
                "grade_result": session.grade_result or None,
                "actor": change.get("actor"),
            },
        )
    ]
