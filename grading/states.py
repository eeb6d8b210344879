"""Grading status choices and transitions (SPEC §2.3): forward only, any non-terminal → FAULTED.

Also the badge colours of grading states and of a report's result (see `sessions.states`)."""

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

GRADING_BADGE_COLOURS = {
    G.PENDING: "grey",
    G.COLLECTING: "amber",
    G.GRADING: "orange",
    G.REVIEWING: "purple",
    G.SUBMITTED: "green",
    G.FAULTED: "red",
}

# A score report's (and a session's) result, PASS or FAIL.
RESULT_BADGE_COLOURS = {"PASS": "green", "FAIL": "red"}
