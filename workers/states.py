"""Fleet status choice sets, transition tables (SPEC §2.4) and badge colours (see `sessions.states`)."""

from django.db import models

from lcm.fsm import machine

# SPEC §2.4, exactly: a status, its badge colour and the statuses it may move to.
WorkerStatus, WORKER_TRANSITIONS, WORKER_BADGE_COLOURS = machine(
    "WorkerStatus",
    """
        PENDING       grey    -> PROVISIONING FAILED TERMINATED
        PROVISIONING  indigo  -> STARTING RUNNING FAILED TERMINATING
        STARTING      blue    -> RUNNING STOPPING FAILED
        RUNNING       green   -> DRAINING STOPPING TERMINATING FAILED
        DRAINING      amber   -> RUNNING STOPPING TERMINATING
        STOPPING      purple  -> STOPPED FAILED
        STOPPED       slate   -> STARTING TERMINATING
        TERMINATING   orange  -> TERMINATED
        TERMINATED    dark    ->
        FAILED        red     -> PENDING TERMINATING
    """,
)
W = WorkerStatus


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


# The spec names the lab states; the moves follow CML's lab life cycle. ORPHANED (gone from
# CML, or unknown to LCM) and ERROR are reachable from any live state; DELETED is final. A session's lab found
# gone or stopped (drift, SPEC §11) is re-imported in the same record, keeping its ports: ORPHANED/ERROR → IMPORTING.
LabStatus, LAB_TRANSITIONS, LAB_BADGE_COLOURS = machine(
    "LabStatus",
    """
        IMPORTING  indigo  -> DEFINED DELETING DELETED ERROR ORPHANED
        DEFINED    blue    -> STARTING WIPED DELETING ERROR ORPHANED
        STARTING   indigo  -> BOOTED STOPPING ERROR ORPHANED
        BOOTED     green   -> STOPPING ERROR ORPHANED
        STOPPING   indigo  -> STOPPED ERROR ORPHANED
        STOPPED    slate   -> STARTING WIPING DELETING ERROR ORPHANED
        WIPING     indigo  -> WIPED ERROR ORPHANED
        WIPED      teal    -> STARTING DELETING ERROR ORPHANED
        DELETING   indigo  -> DELETED ERROR ORPHANED
        DELETED    dark    ->
        ORPHANED   brown   -> DEFINED DELETING DELETED IMPORTING
        ERROR      red     -> STARTING STOPPING WIPING DELETING DELETED ORPHANED IMPORTING
    """,
)
L = LabStatus


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
