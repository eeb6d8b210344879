"""After-commit listener: project session and worker state into coordination (SPEC §4) and wake the loops.

With etcd configured, `manage.py lcm_watch` turns each key change into an immediate reconcile;
with the in-process coordinator (embedded default) the listener wakes the loops itself. A batch of
changes (a placement tick's) is read in one query and written in a few etcd transactions.
"""

import logging

from django.conf import settings

from lcm.events import changes_committed

logger = logging.getLogger("lcm.projection")


def on_changes_committed(sender, *, changes, **kwargs):
    from lcm import coordination, loops

    session_ids = list(dict.fromkeys(c["id"] for c in changes if c["entity"] == "session"))
    worker_ids = list(dict.fromkeys(c["id"] for c in changes if c["entity"] in ("worker", "worker.desired")))
    in_process = not settings.LCM_ETCD_ENDPOINTS  # then do what `lcm_watch` does with an etcd change
    if session_ids:
        from sessions.models import LabletSession

        rows = list(
            LabletSession.objects.filter(pk__in=session_ids).values_list(
                "pk", "status", "allocated_ports", "cleanup_pending"
            )
        )
        coordination.project_sessions((pk, status, ports, not pending) for pk, status, ports, pending in rows)
        if in_process:
            from sessions.reconcilers import wake

            for pk, status, _ports, _pending in rows:
                wake(str(pk), status)
    if worker_ids:
        from workers.models import CMLWorker

        rows = list(CMLWorker.objects.filter(pk__in=worker_ids).values_list("pk", "desired_status", "status"))
        coordination.project_workers(rows)
        if in_process and "workers" in loops.LOOPS:
            for pk, _desired, _status in rows:
                loops.enqueue("workers", str(pk))


def connect() -> None:
    changes_committed.connect(on_changes_committed, dispatch_uid="lcm.projection")


def disconnect() -> None:
    changes_committed.disconnect(dispatch_uid="lcm.projection")
