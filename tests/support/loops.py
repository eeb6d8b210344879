"""Tick the control loops by hand (placement, then every session needing work), as the loop tests do."""

from lcm import reconcile
from scheduling.scheduler import place_pending
from sessions.models import LabletSession
from sessions.reconcilers import reconcile_session, record_failure, sessions_needing_work


def drive(until, *, ticks: int = 60):
    """Tick placement and reconcile every session needing work until `until()` holds; returns the tick count."""
    for tick in range(ticks):
        if until():
            return tick
        place_pending(require_leader=False)
        for session_id in sessions_needing_work():
            reconcile.run("lablets", session_id, reconcile_session, record_failure)
    assert until(), "the loops did not reach the expected state"
    return ticks


def status_of(session) -> str:
    return LabletSession.objects.get(pk=session.pk).status
