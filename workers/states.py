"""Fleet status choice sets, transition tables (SPEC §2.4) and badge colours (see `sessions.states`)."""

from django.db import models


class WorkerStatus(models.TextChoices):
    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DRAINING = "DRAINING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"


W = WorkerStatus

# SPEC §2.4, exactly.
WORKER_TRANSITIONS: dict[str, set[str]] = {
    W.PENDING: {W.PROVISIONING, W.FAILED, W.TERMINATED},
    W.PROVISIONING: {W.STARTING, W.RUNNING, W.FAILED, W.TERMINATING},
    W.STARTING: {W.RUNNING, W.STOPPING, W.FAILED},
    W.RUNNING: {W.DRAINING, W.STOPPING, W.TERMINATING, W.FAILED},
    W.DRAINING: {W.RUNNING, W.STOPPING, W.TERMINATING},
    W.STOPPING: {W.STOPPED, W.FAILED},
    W.STOPPED: {W.STARTING, W.TERMINATING},
    W.TERMINATING: {W.TERMINATED},
    W.TERMINATED: set(),
    W.FAILED: {W.PENDING, W.TERMINATING},
}

WORKER_BADGE_COLOURS = {
    W.PENDING: "grey",
    W.PROVISIONING: "indigo",
    W.STARTING: "blue",
    W.RUNNING: "green",
    W.DRAINING: "amber",
    W.STOPPING: "purple",
    W.STOPPED: "slate",
    W.TERMINATING: "orange",
    W.TERMINATED: "dark",
    W.FAILED: "red",
}

# Workers on their way to RUNNING count as coming capacity for the autoscaler.
COMING = {W.PENDING, W.PROVISIONING, W.STARTING}


class DesiredStatus(models.TextChoices):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    TERMINATED = "TERMINATED"


DESIRED_BADGE_COLOURS = {
    DesiredStatus.RUNNING: "green",
    DesiredStatus.STOPPED: "slate",
    DesiredStatus.TERMINATED: "dark",
}


class LicenseStatus(models.TextChoices):
    UNREGISTERED = "UNREGISTERED"
    REGISTERING = "REGISTERING"
    REGISTERED = "REGISTERED"
    DEREGISTERING = "DEREGISTERING"
    FAILED = "FAILED"


LICENSE_BADGE_COLOURS = {
    LicenseStatus.UNREGISTERED: "grey",
    LicenseStatus.REGISTERING: "indigo",
    LicenseStatus.REGISTERED: "green",
    LicenseStatus.DEREGISTERING: "indigo",
    LicenseStatus.FAILED: "red",
}


class LabStatus(models.TextChoices):
    IMPORTING = "IMPORTING"
    DEFINED = "DEFINED"
    STARTING = "STARTING"
    BOOTED = "BOOTED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    WIPING = "WIPING"
    WIPED = "WIPED"
    DELETING = "DELETING"
    DELETED = "DELETED"
    ORPHANED = "ORPHANED"
    ERROR = "ERROR"


L = LabStatus

# The spec names the lab states; the moves follow CML's lab life cycle. ORPHANED (gone from
# CML, or unknown to LCM) and ERROR are reachable from any live state; DELETED is final.
_LIVE_EXITS = {L.ERROR, L.ORPHANED}
LAB_TRANSITIONS: dict[str, set[str]] = {
    L.IMPORTING: {L.DEFINED, L.DELETING, L.DELETED} | _LIVE_EXITS,
    L.DEFINED: {L.STARTING, L.WIPED, L.DELETING} | _LIVE_EXITS,
    L.STARTING: {L.BOOTED, L.STOPPING} | _LIVE_EXITS,
    L.BOOTED: {L.STOPPING} | _LIVE_EXITS,
    L.STOPPING: {L.STOPPED} | _LIVE_EXITS,
    L.STOPPED: {L.STARTING, L.WIPING, L.DELETING} | _LIVE_EXITS,
    L.WIPING: {L.WIPED} | _LIVE_EXITS,
    L.WIPED: {L.STARTING, L.DELETING} | _LIVE_EXITS,
    L.DELETING: {L.DELETED} | _LIVE_EXITS,
    L.DELETED: set(),
    L.ORPHANED: {L.DEFINED, L.DELETING, L.DELETED},
    L.ERROR: {L.STARTING, L.STOPPING, L.WIPING, L.DELETING, L.DELETED, L.ORPHANED},
}

LAB_BADGE_COLOURS = {
    L.IMPORTING: "indigo",
    L.DEFINED: "blue",
    L.STARTING: "indigo",
    L.BOOTED: "green",
    L.STOPPING: "indigo",
    L.STOPPED: "slate",
    L.WIPING: "indigo",
    L.WIPED: "teal",
    L.DELETING: "indigo",
    L.DELETED: "dark",
    L.ORPHANED: "brown",
    L.ERROR: "red",
}

# Labs that still exist in CML and so keep their ports.
LAB_HOLDS_PORTS = set(LabStatus.values) - {L.DELETED}


class LicenseType(models.TextChoices):
    PERSONAL = "PERSONAL"
    ENTERPRISE = "ENTERPRISE"
    EVALUATION = "EVALUATION"


# Protocols a `protocol:port` node tag may name, in the priority used to pick a device's
# access protocol (SPEC §3.3).
PORT_PROTOCOLS = ("vnc", "http", "https", "ssh", "serial", "telnet")


class ScaleAction(models.TextChoices):
    """What a fleet decision did (or why it did nothing)."""

    LAUNCH = "LAUNCH"  # a new worker from a template
    START = "START"  # a worker LCM itself stopped, started again for demand
    CANCEL_DRAIN = "CANCEL_DRAIN"  # a worker LCM was draining, kept for demand
    DRAIN = "DRAIN"  # scale-down: an empty, unneeded worker drains and stops
    PAUSE = "PAUSE"  # idle auto-pause: an idle worker is stopped
    WAIT = "WAIT"  # demand that no action serves now (cooldown, maximum, no template fits, autoscaling off)
    DISCOVER = "DISCOVER"  # an EC2 instance LCM did not know, imported as a worker
    VANISHED = "VANISHED"  # a worker whose instance disappeared behind LCM's back
