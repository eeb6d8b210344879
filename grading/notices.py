"""What the grading app announces (SPEC §11, `lcm.notifications`): a grading that FAULTED (no score)."""

from grading.models import GradingSession
from lcm.notifications import Notice

KINDS = {"grading.faulted": "The grading of a session FAULTED"}


def grading_faulted_notices(change: dict) -> list[Notice]:
    """The notice of a grading session's move to FAULTED (a grading faults once)."""
    grading = GradingSession.objects.select_related("lablet_session__definition").filter(pk=change["id"]).first()
    if grading is None:
        return []
    session = grading.lablet_session
    reason = change.get("reason") or grading.error_message
    what = f"Grading of {session.owner} ({session.definition.name}) FAULTED"
    return [
        Notice(
            kind="grading.faulted",
            subject=f"sessions/{session.pk}",
            summary=what + (f": {reason}" if reason else ""),
            key=f"grading-faulted:{grading.pk}",
            link=f"/sessions/{session.pk}/",
            data={
                "session_id": str(session.pk),
                "owner": session.owner,
                "grading_session_id": grading.grading_session_id,
                "reason": reason,
                "actor": change.get("actor"),
            },
        )
    ]
