"""Status choice sets, transition tables (SPEC §2.1–2.3) and badge colours for the sessions app.

A badge colour is a colour name (`static/lcm/lcm.css` has one `.bg-<colour>` class per name); the
pages read it from these maps through the `badge_colour` template filter, so a new status needs
only its entry here.
"""

from django.db import models
from django.db.models import Q


class SessionStatus(models.TextChoices):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    INSTANTIATING = "INSTANTIATING"
    READY = "READY"
    RUNNING = "RUNNING"
    COLLECTING = "COLLECTING"
    GRADING = "GRADING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    ARCHIVED = "ARCHIVED"
    TERMINATED = "TERMINATED"
    EXPIRED = "EXPIRED"


S = SessionStatus

# SPEC §2.2, exactly: anything not listed is refused.
SESSION_TRANSITIONS: dict[str, set[str]] = {
    S.PENDING: {S.SCHEDULED, S.EXPIRED, S.TERMINATED},
    S.SCHEDULED: {S.INSTANTIATING, S.PENDING, S.EXPIRED, S.TERMINATED},
    S.INSTANTIATING: {S.READY, S.EXPIRED, S.TERMINATED},
    S.READY: {S.RUNNING, S.EXPIRED, S.TERMINATED},
    S.RUNNING: {S.COLLECTING, S.STOPPING, S.EXPIRED, S.TERMINATED},
    S.COLLECTING: {S.GRADING, S.STOPPING, S.EXPIRED, S.TERMINATED},
    S.GRADING: {S.STOPPING, S.EXPIRED, S.TERMINATED},
    S.STOPPING: {S.STOPPED, S.TERMINATED},
    S.STOPPED: {S.ARCHIVED, S.TERMINATED},
    S.ARCHIVED: {S.TERMINATED},
    S.EXPIRED: {S.STOPPING, S.TERMINATED},
    S.TERMINATED: set(),
}

# Targets a person may ask for by hand (REST `transition`, pages, `session_transition`).
MANUAL_TARGETS = {S.RUNNING, S.COLLECTING, S.GRADING, S.STOPPING, S.ARCHIVED}

TERMINAL = {S.ARCHIVED, S.TERMINATED}
# A session that may still change by itself (the reconciler has work to do on it).
ACTIVE = set(SessionStatus.values) - TERMINAL

# Capacity is held from SCHEDULED until the lab is stopped (SPEC §2.2); TERMINATED holds it
# too while `cleanup_pending` is set, and so does EXPIRED (until its lab is handed to STOPPING or it is
# found clean): see `scheduling.selectors`.
CAPACITY_HOLDING = {S.SCHEDULED, S.INSTANTIATING, S.READY, S.RUNNING, S.COLLECTING, S.GRADING, S.STOPPING}

SESSION_BADGE_COLOURS = {
    S.PENDING: "grey",
    S.SCHEDULED: "blue",
    S.INSTANTIATING: "indigo",
    S.READY: "teal",
    S.RUNNING: "green",
    S.COLLECTING: "amber",
    S.GRADING: "orange",
    S.STOPPING: "purple",
    S.STOPPED: "slate",
    S.ARCHIVED: "dark",
    S.TERMINATED: "red",
    S.EXPIRED: "brown",
}


class EndReason(models.TextChoices):
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"


class DefinitionStatus(models.TextChoices):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    DEPRECATED = "DEPRECATED"
    ARCHIVED = "ARCHIVED"


D = DefinitionStatus

# The spec names the states; the moves are ours: ACTIVE and INACTIVE toggle, DEPRECATED can
# be re-activated, ARCHIVED is final.
DEFINITION_TRANSITIONS: dict[str, set[str]] = {
    D.ACTIVE: {D.INACTIVE, D.DEPRECATED, D.ARCHIVED},
    D.INACTIVE: {D.ACTIVE, D.DEPRECATED, D.ARCHIVED},
    D.DEPRECATED: {D.ACTIVE, D.ARCHIVED},
    D.ARCHIVED: set(),
}

DEFINITION_BADGE_COLOURS = {
    D.ACTIVE: "green",
    D.INACTIVE: "slate",
    D.DEPRECATED: "amber",
    D.ARCHIVED: "dark",
}


class UserSessionStatus(models.TextChoices):
    PROVISIONING = "PROVISIONING"
    PROVISIONED = "PROVISIONED"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    ENDED = "ENDED"
    EXPIRED = "EXPIRED"
    FAULTED = "FAULTED"


U = UserSessionStatus

# SPEC §2.3, exactly.
USER_SESSION_TRANSITIONS: dict[str, set[str]] = {
    U.PROVISIONING: {U.PROVISIONED, U.FAULTED},
    U.PROVISIONED: {U.ACTIVE, U.FAULTED},
    U.ACTIVE: {U.PAUSED, U.ENDED, U.EXPIRED, U.FAULTED},
    U.PAUSED: {U.ACTIVE, U.ENDED, U.EXPIRED, U.FAULTED},
    U.ENDED: set(),
    U.EXPIRED: set(),
    U.FAULTED: set(),
}


def capacity_holding_q(prefix: str = "") -> Q:
    """Sessions holding capacity on their worker (SPEC §2.2): the active states, plus TERMINATED or EXPIRED
    while their teardown is pending. `prefix` reaches sessions through a relation (`"sessions__"`)."""
    return Q(**{f"{prefix}status__in": CAPACITY_HOLDING}) | Q(
        **{f"{prefix}status__in": [SessionStatus.TERMINATED, SessionStatus.EXPIRED], f"{prefix}cleanup_pending": True}
    )


USER_SESSION_BADGE_COLOURS = {
    U.PROVISIONING: "indigo",
    U.PROVISIONED: "teal",
    U.ACTIVE: "green",
    U.PAUSED: "amber",
    U.ENDED: "slate",
    U.EXPIRED: "brown",
    U.FAULTED: "red",
}
