"""Wait for a condition with a timeout."""

import time

import pytest


def poll(condition, *, timeout: float, interval: float = 0.1) -> bool:
    """Call `condition` every `interval` seconds until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def wait_until(condition, *, timeout: float, what: str, details=lambda: "") -> None:
    """Poll `condition` until true; fail with `what` and `details()` after `timeout` seconds."""
    if not poll(condition, timeout=timeout, interval=0.2):
        pytest.fail(f"{what} did not happen within {timeout:.0f} s: {details()}")
