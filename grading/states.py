"""Grading status choices and transitions (SPEC §2.3): forward only, any non-terminal → FAULTED.

Also the badge colours of grading states and of a report's result (see `sessions.states`)."""

from django.db import models

from lcm.fsm import machine


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


# Evidence of one session (SPEC §9): collected before its lab is wiped; RECORDED, or MISSING (with the reason)
# when it could not be collected within `SystemSettings.evidence_timeout_minutes`.
EvidenceStatus, EVIDENCE_TRANSITIONS, EVIDENCE_BADGE_COLOURS = machine(
    "EvidenceStatus",
    """
        COLLECTING  amber  -> RECORDED MISSING
        RECORDED    green  ->
        MISSING     red    ->
    """,
)

# A re-grade of an ARCHIVED session (SPEC §9): its evidence lab imported and booted on a worker, graded, the
# score report stored, the lab torn down. A failure on the way still tears down (TEARING_DOWN with the error),
# then ends FAILED.
RegradeStatus, REGRADE_TRANSITIONS, REGRADE_BADGE_COLOURS = machine(
    "RegradeStatus",
    """
        REQUESTED     grey    -> BOOTING TEARING_DOWN
        BOOTING       indigo  -> GRADING TEARING_DOWN
        GRADING       orange  -> TEARING_DOWN
        TEARING_DOWN  purple  -> DONE FAILED
        DONE          green   ->
        FAILED        red     ->
    """,
)
REGRADE_FINISHED = {RegradeStatus.DONE, RegradeStatus.FAILED}

EVIDENCE_KINDS = ("lab_yaml", "node_config", "lds_record", "lds_responses", "grading")
