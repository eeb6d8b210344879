"""After-commit listener: project what changed into coordination (SPEC §4) and wake the loops.

Each app registers a projector for the entities it owns (`register`, in `AppConfig.ready()`); a
projector reads its changed rows in one query, writes etcd in a few transactions and, with the
in-process coordinator (embedded default: no `LCM_ETCD_ENDPOINTS`), wakes the loops itself, as
`manage.py lcm_watch` does on an etcd change. Connected when `LCM_PROJECTION_ENABLED` (tests switch
it on with `connect()`).
"""

import logging
from collections.abc import Callable

from django.conf import settings

from lcm.events import changes_committed

logger = logging.getLogger("lcm.projection")

# entity name of a change ("session", "worker", ...) → projector(ids, *, in_process)
_PROJECTORS: dict[str, Callable[..., None]] = {}


def register(entities: tuple[str, ...], projector: Callable[..., None]) -> None:
    """`projector(ids, in_process=...)` is called after commit with the ids of the changed `entities`."""
    for entity in entities:
        _PROJECTORS[entity] = projector


def on_changes_committed(sender, *, changes, **kwargs):
    in_process = not settings.LCM_ETCD_ENDPOINTS
    ids_by_projector: dict[Callable, dict] = {}
    for change in changes:
        projector = _PROJECTORS.get(change["entity"])
        if projector is not None:
            ids_by_projector.setdefault(projector, {})[change["id"]] = None  # ordered, without repeats
    for projector, ids in ids_by_projector.items():
        projector(list(ids), in_process=in_process)


def connect() -> None:
    changes_committed.connect(on_changes_committed, dispatch_uid="lcm.projection")


def disconnect() -> None:
    changes_committed.disconnect(dispatch_uid="lcm.projection")
