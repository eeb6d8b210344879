"""Status choice sets, transition tables (SPEC §2.1–2.3) and badge colours for the sessions app.

A badge colour is a colour name (`static/lcm/lcm.css` has one `.bg-<colour>` class per name); the
pages read it from these maps through the `badge_colour` template filter, so a new status needs
only its entry here.
"""

from django.db import models
from django.db.models import Q

from lcm.fsm import machine

# SPEC §2.2, exactly: a status, its badge colour and the statuses it may move to; anything else is refused.
SessionStatus, SESSION_TRANSITIONS, SESSION_BADGE_COLOURS = machine(
    "SessionStatus",
    """
        PENDING        grey    -> SCHEDULED EXPIRED TERMINATED
        SCHEDULED      blue    -> INSTANTIATING PENDING EXPIRED TERMINATED
        INSTANTIATING  indigo  -> READY EXPIRED TERMINATED
        READY          teal    -> RUNNING EXPIRED TERMINATED
        RUNNING        green   -> COLLECTING STOPPING EXPIRED TERMINATED
        COLLECTING     amber   -> GRADING STOPPING EXPIRED TERMINATED
        GRADING        orange  -> STOPPING EXPIRED TERMINATED
        STOPPING       purple  -> STOPPED TERMINATED
        STOPPED        slate   -> ARCHIVED TERMINATED
        ARCHIVED       dark    -> TERMINATED
        TERMINATED     red     ->
        EXPIRED        brown   -> STOPPING TERMINATED
    """,
)
S = SessionStatus


# Targets a person may ask for by hand (REST `transition`, pages, `session_transition`).
MANUAL_TARGETS = {S.RUNNING, S.COLLECTING, S.GRADING, S.STOPPING, S.ARCHIVED}

TERMINAL = {S.ARCHIVED, S.TERMINATED}
# A session that may still change by itself (the reconciler has work to do on it).
ACTIVE = set(SessionStatus.values) - TERMINAL

# Capacity is held from SCHEDULED until the lab is stopped (SPEC §2.2); TERMINATED holds it
# too while `cleanup_pending` is set, and so does EXPIRED (until its lab is handed to STOPPING or it is
# found clean): see `scheduling.selectors`.
CAPACITY_HOLDING = {S.SCHEDULED, S.INSTANTIATING, S.READY, S.RUNNING, S.COLLECTING, S.GRADING, S.STOPPING}


class GradingMode(models.TextChoices):
    """How a definition's sessions are graded (SPEC §3.4): by the loop, by an instructor's button, or not at all."""

    AUTO = "auto"
    MANUAL = "manual"
    NONE = "none"


class EndReason(models.TextChoices):
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"


# The spec names the states; the moves are ours: ACTIVE and INACTIVE toggle, DEPRECATED can
# be re-activated, ARCHIVED is final.
DefinitionStatus, DEFINITION_TRANSITIONS, DEFINITION_BADGE_COLOURS = machine(
    "DefinitionStatus",
    """
        ACTIVE      green  -> INACTIVE DEPRECATED ARCHIVED
        INACTIVE    slate  -> ACTIVE DEPRECATED ARCHIVED
        DEPRECATED  amber  -> ACTIVE ARCHIVED
        ARCHIVED    dark   ->
    """,
)


# SPEC §2.3, exactly.
UserSessionStatus, USER_SESSION_TRANSITIONS, USER_SESSION_BADGE_COLOURS = machine(
    "UserSessionStatus",
    """
        PROVISIONING  indigo  -> PROVISIONED FAULTED
        PROVISIONED   teal    -> ACTIVE FAULTED
        ACTIVE        green   -> PAUSED ENDED EXPIRED FAULTED
        PAUSED        amber   -> ACTIVE ENDED EXPIRED FAULTED
        ENDED         slate   ->
        EXPIRED       brown   ->
        FAULTED       red     ->
    """,
)


def capacity_holding_q(prefix: str = "") -> Q:
    """Sessions holding capacity on their worker (SPEC §2.2): the active states, plus TERMINATED or EXPIRED
    while their teardown is pending. `prefix` reaches sessions through a relation (`"sessions__"`)."""
    return Q(**{f"{prefix}status__in": CAPACITY_HOLDING}) | Q(
        **{f"{prefix}status__in": [SessionStatus.TERMINATED, SessionStatus.EXPIRED], f"{prefix}cleanup_pending": True}
    )
