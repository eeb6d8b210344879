"""Reads of the fleet shared by the autoscaler loop and the capacity check (SPEC §3.6, §10)."""

from django.db.models import Q

from workers.models import WorkerStatusChange
from workers.states import DesiredStatus, WorkerStatus

W = WorkerStatus

AUTOSCALER_ACTOR = "autoscaler"
IDLE_ACTOR = "idle-detector"
RECONCILER_ACTOR = "worker-reconciler"
# Who may stop a worker and start it again on demand: LCM itself, never on an admin's behalf.
LCM_STOPPERS = {AUTOSCALER_ACTOR, IDLE_ACTOR}


def stopped_by(worker_ids) -> dict[str, str]:
    """`{worker id: actor}` of whoever last asked each worker to stop (a drain or desired STOPPED), the worker
    reconciler's own follow-ups (it stops a drained worker) not counted."""
    rows = (
        WorkerStatusChange.objects.filter(worker_id__in=list(worker_ids))
        .filter(Q(field="status", to_status=W.DRAINING) | Q(field="desired_status", to_status=DesiredStatus.STOPPED))
        .exclude(actor=RECONCILER_ACTOR)
        .order_by("worker_id", "-at", "-id")
        .values_list("worker_id", "actor")
    )
    found: dict[str, str] = {}
    for worker_id, actor in rows:
        found.setdefault(str(worker_id), actor)
    return found
