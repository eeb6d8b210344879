"""Version strings read as numbers: the one parser for CML versions, lablet definition versions and AMI names.

Pure: imports no app, so every app (sessions, scheduling, workers) can use it.
"""

import functools
import re


@functools.lru_cache(maxsize=1024)
def version_key(version: str) -> tuple[int, ...]:
    """`2.10.1` → (2, 10, 1): the numbers before any `-suffix`, so versions compare numerically (2.10 > 2.9)."""
    return tuple(int(part) for part in re.findall(r"\d+", (version or "").split("-")[0]))


def ami_version_hint(ami_name_pattern: str) -> str:
    """The CML version an AMI name pattern promises: `cml-2.9*` → `2.9`; "" when it names none."""
    match = re.search(r"(\d+(?:\.\d+)+)", ami_name_pattern or "")
    return match.group(1) if match else ""
