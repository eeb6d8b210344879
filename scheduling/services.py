"""Port allocation and release: race-free by the (worker, port) unique constraint, no compare-and-swap."""

import logging
import random

from django.db import IntegrityError, transaction

from scheduling.ports import PortsExhausted, choose_ports
from workers.models import Port

logger = logging.getLogger("lcm.scheduling.services")

# Each round at least one racer wins, so this bounds the wait even with many allocators at once.
_MAX_ALLOCATION_ROUNDS = 64


def ports_allocate(lab_record, names: list[str]) -> dict[str, int]:
    """Allocate one port per name on the lab's worker and record them for the lab; returns `{name: port}`.

    Ports the lab already holds are kept (idempotent). On a race with another allocator
    the losing insert hits the unique constraint, its savepoint rolls back and it picks
    again from a fresh read, starting at a random point so racers spread out. Raises
    `PortsExhausted` when the range is full.
    """
    worker = lab_record.worker
    for attempt in range(_MAX_ALLOCATION_ROUNDS):
        # One read of the worker's ports gives those in use and those this lab holds already.
        rows = list(Port.objects.filter(worker=worker).values_list("port", "lab_record_id", "name"))
        used = {port for port, _, _ in rows}
        held = {name: port for port, lab_id, name in rows if lab_id == lab_record.pk}
        wanted = [n for n in dict.fromkeys(names) if n not in held]
        if not wanted:
            return {n: held[n] for n in names}
        if attempt == 0:
            hint = max(used) + 1 if used else None
        else:
            hint = random.randint(worker.port_range_start, worker.port_range_end)
        chosen = choose_ports(used, len(wanted), worker.port_range_start, worker.port_range_end, hint)
        try:
            with transaction.atomic():
                Port.objects.bulk_create(
                    [
                        Port(worker=worker, port=p, lab_record=lab_record, name=n)
                        for n, p in zip(wanted, chosen, strict=True)
                    ]
                )
        except IntegrityError:
            logger.info("port allocation on %s raced; retrying", worker.name)
            continue
        held.update(zip(wanted, chosen, strict=True))
        return {n: held[n] for n in names}
    raise PortsExhausted(f"could not allocate {len(names)} ports on {worker.name} after repeated races")


def ports_release(lab_record) -> int:
    """Release every port the lab holds; returns how many were released."""
    deleted, _ = Port.objects.filter(lab_record=lab_record).delete()
    return deleted


def ports_release_worker(worker) -> int:
    """Release every port on a worker (it was terminated); returns how many."""
    deleted, _ = Port.objects.filter(worker=worker).delete()
    return deleted
