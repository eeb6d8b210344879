"""In-process change notifications, sent only after the transaction that made the change commits.

Services call `publish_change` (one change) or `publish_changes` (a batch made in one step, e.g. a
placement tick); listeners connect to `status_changed` (once per change) or to `changes_committed`
(once per publish call, with all its changes: the etcd projection, which then reads and writes
them in bulk). A listener's failure is logged and never undoes or blocks the change: PostgreSQL
stays the source of truth.
"""

import logging
from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger("lcm.events")

# Sent with: entity (e.g. "session", "worker"), id (str), from_status, to_status, actor, reason.
status_changed = Signal()
# Sent with: changes, a list of the dicts `status_changed` is sent with (one publish call's).
changes_committed = Signal()


def _report(signal_name: str, responses) -> None:
    for receiver, result in responses:
        if isinstance(result, Exception):
            logger.error("%s listener %s failed: %s", signal_name, getattr(receiver, "__name__", receiver), result)


def publish_changes(changes: Iterable[tuple], *, actor: str) -> None:
    """Log each `(entity, id, from_status, to_status, reason)` now; announce them once the transaction commits."""
    payloads = [
        {"entity": entity, "id": str(obj_id), "from_status": from_status, "to_status": to_status,
         "actor": actor, "reason": reason}
        for entity, obj_id, from_status, to_status, reason in changes
    ]  # fmt: skip
    if not payloads:
        return
    for p in payloads:
        logger.info("%s %s %s -> %s by %s", p["entity"], p["id"], p["from_status"] or "-", p["to_status"], actor)

    def _send():
        for payload in payloads:
            _report("status_changed", status_changed.send_robust(sender=payload["entity"], **payload))
        _report("changes_committed", changes_committed.send_robust(sender="lcm", changes=payloads))

    transaction.on_commit(_send)


def publish_change(entity: str, obj_id, from_status: str, to_status: str, *, actor: str, reason: str = "") -> None:
    """Log the change now and announce it to listeners once the current transaction commits."""
    publish_changes([(entity, obj_id, from_status, to_status, reason)], actor=actor)
