"""After-commit listener: project session and worker state into coordination (SPEC §4) and wake the loops.

With etcd configured, `manage.py lcm_watch` turns each key change into an immediate reconcile;
with the in-process coordinator (embedded default) the listener enqueues it itself.
"""

import logging

from django.conf import settings

from lcm.events import status_changed

logger = logging.getLogger("lcm.projection")


def on_status_changed(sender, *, entity, id, from_status, to_status, **kwargs):  # noqa: A002 - signal kwarg
    from lcm import coordination, loops

    if entity == "session":
        from sessions.models import LabletSession

        row = LabletSession.objects.filter(pk=id).values("status", "allocated_ports", "cleanup_pending").first()
        if row is None:
            return
        coordination.project_session(id, row["status"], row["allocated_ports"], clean=not row["cleanup_pending"])
        if not settings.LCM_ETCD_ENDPOINTS:  # in-process: what `lcm_watch` does with the etcd change
            from sessions.reconcilers import wake

            wake(id, row["status"])
    elif entity in ("worker", "worker.desired"):
        from workers.models import CMLWorker

        row = CMLWorker.objects.filter(pk=id).values("status", "desired_status").first()
        if row is not None:
            coordination.project_worker(id, row["desired_status"], row["status"])
            if not settings.LCM_ETCD_ENDPOINTS and "workers" in loops.LOOPS:
                loops.enqueue("workers", id)


def connect() -> None:
    status_changed.connect(on_status_changed, dispatch_uid="lcm.projection")
