"""What the workers app announces (SPEC §11, `lcm.notifications`): a worker that went FAILED, each time it does."""

from lcm.notifications import Notice
from workers.models import CMLWorker, WorkerStatusChange
from workers.states import WorkerStatus

KINDS = {"worker.failed": "A CML worker went FAILED"}


def worker_failed_notices(change: dict) -> list[Notice]:
    """The notice of a worker's move to FAILED; keyed by that history row, so each failure is one event."""
    worker = CMLWorker.objects.filter(pk=change["id"]).first()
    row = (
        WorkerStatusChange.objects.filter(worker_id=change["id"], field="status", to_status=WorkerStatus.FAILED)
        .order_by("-at", "-id")
        .first()
    )
    if worker is None or row is None:
        return []
    reason = change.get("reason") or row.reason
    return [
        Notice(
            kind="worker.failed",
            subject=f"workers/{worker.pk}",
            summary=f"Worker {worker.name} FAILED" + (f": {reason}" if reason else ""),
            key=f"worker-failed:{row.pk}",
            link=f"/workers/{worker.pk}/",
            data={
                "worker_id": str(worker.pk),
                "name": worker.name,
                "from_status": change.get("from_status"),
                "status": worker.status,
                "reason": reason,
                "region": worker.region,
                "instance_id": worker.aws_instance_id,
                "actor": change.get("actor"),
            },
        )
    ]
