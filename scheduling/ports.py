"""Pure port choice: pick free ports in a worker's range without rescanning from its start each time."""


class PortsExhausted(Exception):
    """The worker's port range has fewer free ports than requested."""


def choose_ports(used: set[int], count: int, start: int, end: int, hint: int | None = None) -> list[int]:
    """Choose `count` free ports in [start, end], walking upwards from `hint` and wrapping once.

    `hint` is normally one past the highest port in use, so a busy worker does not rescan
    the low end of its range on every allocation.
    """
    if count <= 0:
        return []
    size = end - start + 1
    if size - len([p for p in used if start <= p <= end]) < count:
        raise PortsExhausted(f"needs {count} ports, {size - len(used)} free in {start}-{end}")
    first = hint if hint is not None and start <= hint <= end else start
    chosen: list[int] = []
    for offset in range(size):
        candidate = start + (first - start + offset) % size
        if candidate not in used:
            chosen.append(candidate)
            if len(chosen) == count:
                return chosen
    raise PortsExhausted(f"needs {count} ports in {start}-{end}")
