"""Port allocation and release, the only writers of `Port`: race-free by the (worker, port) unique
constraint, no compare-and-swap."""

import logging
import random

from django.db import IntegrityError, transaction
from django.db.models import Max

from scheduling.ports import PortsExhausted, choose_ports
from workers.models import Port

logger = logging.getLogger("lcm.workers.ports")

# Each round at least one racer wins, so this bounds the wait even with many allocators at once.
_MAX_ALLOCATION_ROUNDS = 64


def ports_allocate(lab_record, names: list[str], *, new_lab: bool = False) -> dict[str, int]:
    """Allocate one port per name on the lab's worker and record them for the lab; returns `{name: port}`.

    Ports the lab already holds are kept (idempotent). On a race with another allocator
    the losing insert hits the unique constraint, its savepoint rolls back and it picks
    again from a fresh read, starting at a random point so racers spread out. Raises
    `PortsExhausted` when the range is full. `new_lab`: the caller made the record in this
    transaction, so it holds no ports: the ports just past the highest in use are tried first,
    found with one indexed lookup instead of reading every port on the worker.
    """
    worker = lab_record.worker
    wanted = list(dict.fromkeys(names))
    if new_lab and wanted:
        highest = Port.objects.filter(worker=worker).aggregate(m=Max("port"))["m"]
        first = worker.port_range_start if highest is None else highest + 1
        if worker.port_range_start <= first and first + len(wanted) - 1 <= worker.port_range_end:
            chosen = dict(zip(wanted, range(first, first + len(wanted)), strict=True))
            if _insert_ports(lab_record, chosen):
                return {n: chosen[n] for n in names}
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
        if not _insert_ports(lab_record, dict(zip(wanted, chosen, strict=True))):
            continue
        held.update(zip(wanted, chosen, strict=True))
        return {n: held[n] for n in names}
    raise PortsExhausted(f"could not allocate {len(names)} ports on {worker.name} after repeated races")


def _insert_ports(lab_record, chosen: dict[str, int]) -> bool:
    """Record `{name: port}` for the lab; False when another allocator took one of them first."""
    worker = lab_record.worker
    try:
        with transaction.atomic():
            Port.objects.bulk_create(
                [Port(worker=worker, port=p, lab_record=lab_record, name=n) for n, p in chosen.items()]
            )
    except IntegrityError:
        logger.info("port allocation on %s raced; retrying", worker.name)
        return False
    return True


def ports_release(lab_record) -> int:
    """Release every port the lab holds; returns how many were released."""
    deleted, _ = Port.objects.filter(lab_record=lab_record).delete()
    return deleted


def ports_release_worker(worker) -> int:
    """Release every port on a worker (it was terminated); returns how many."""
    deleted, _ = Port.objects.filter(worker=worker).delete()
    return deleted
