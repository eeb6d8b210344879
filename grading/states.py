"""Grading status choices and transitions (SPEC §2.3): forward only, any non-terminal → FAULTED."""

from django.db import models


class GradingStatus(models.TextChoices):
    PENDING = "PENDING"
    COLLECTING = "COLLECTING"
    GRADING = "GRADING"
    REVIEWING = "REVIEWING"
    SUBMITTED = "SUBMITTED"
    FAULTED = "FAULTED"


G = GradingStatus
_ORDER = [G.PENDING, G.COLLECTING, G.GRADING, G.REVIEWING, G.SUBMITTED]

GRADING_TRANSITIONS: dict[str, set[str]] = {
    state: set(_ORDER[i + 1 :]) | ({G.FAULTED} if state != G.SUBMITTED else set()) for i, state in enumerate(_ORDER)
}
GRADING_TRANSITIONS[G.FAULTED] = set()

GRADING_TERMINAL = {G.SUBMITTED, G.FAULTED}
