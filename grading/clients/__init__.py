"""The external system the grading app owns: the Grading Engine."""

from grading.clients.grading_engine import (
    GradingEngineClient,
    PartScore,
    SectionScore,
    find_part,
    grading_client,
    part_score,
    pod_from_devices,
)

__all__ = [
    "GradingEngineClient",
    "PartScore",
    "SectionScore",
    "find_part",
    "grading_client",
    "part_score",
    "pod_from_devices",
]
