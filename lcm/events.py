"""In-process change notifications, sent only after the transaction that made the change commits.

Services call `publish_change`; listeners (the etcd projection, live updates, reconcile
enqueueing) connect to `status_changed`. A listener's failure is logged and never undoes
or blocks the change: PostgreSQL stays the source of truth.
"""

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger("lcm.events")

# Sent with: entity (e.g. "session", "worker"), id (str), from_status, to_status, actor, reason.
status_changed = Signal()


def publish_change(entity: str, obj_id, from_status: str, to_status: str, *, actor: str, reason: str = "") -> None:
    """Log the change now and announce it to listeners once the current transaction commits."""
    payload = {
        "entity": entity,
        "id": str(obj_id),
        "from_status": from_status,
        "to_status": to_status,
        "actor": actor,
        "reason": reason,
    }

    def _send():
        for receiver, result in status_changed.send_robust(sender=entity, **payload):
            if isinstance(result, Exception):
                logger.error("status_changed listener %s failed: %s", getattr(receiver, "__name__", receiver), result)

    logger.info("%s %s %s -> %s by %s", entity, payload["id"], from_status or "-", to_status, actor)
    transaction.on_commit(_send)
