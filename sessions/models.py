"""Lablet definitions, sessions (the aggregate), their status history and user sessions (SPEC §2.1–2.3).

Models hold fields and FSM transitions only (no I/O); every write goes through the services
(`sessions.services`, `sessions.booking`, `sessions.definitions`, `sessions.batch`).
"""

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django_fsm import ConcurrentTransitionMixin, FSMField

from lcm.fsm import transitions_from_table
from lcm.models import StatusChange, status_change_columns
from sessions.states import (
    DEFINITION_TRANSITIONS,
    SESSION_TRANSITIONS,
    USER_SESSION_TRANSITIONS,
    DefinitionStatus,
    EndReason,
    GradingMode,
    SessionStatus,
    UserSessionStatus,
)


def _newest(rows):
    """The newest row of a related manager's `.all()` (which honours `prefetch_related`)."""
    return max(rows, key=lambda row: row.created_at, default=None)


class LabletDefinition(ConcurrentTransitionMixin, models.Model):
    """A versioned lab template: the CML topology plus what it needs from a worker.

    `name` + `version` is unique; a published version's content never changes (a change
    makes a new version). `node_count`, `node_definitions_required` and `port_template`
    are derived from `lab_yaml` by `sessions.labyaml`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    version = models.CharField(max_length=50, default="1.0.0")
    description = models.TextField(blank=True, default="")
    lab_yaml = models.TextField()
    lab_artifact_uri = models.CharField(max_length=500, blank=True, default="")
    lab_yaml_hash = models.CharField(max_length=64, editable=False)
    cpu_cores = models.PositiveIntegerField(default=1)
    memory_gb = models.PositiveIntegerField(default=1)
    storage_gb = models.PositiveIntegerField(default=1)
    node_count = models.PositiveIntegerField(default=0)
    license_affinity = models.JSONField(default=list, blank=True)
    cml_version_min = models.CharField(max_length=20, blank=True, default="")
    cml_version_max = models.CharField(max_length=20, blank=True, default="")
    node_definitions_required = models.JSONField(default=list, blank=True)
    port_template = models.JSONField(default=list, blank=True)
    max_duration_minutes = models.PositiveIntegerField(default=60)
    boot_lead_minutes = models.PositiveIntegerField(null=True, blank=True)
    form_qualified_name = models.CharField(max_length=300, blank=True, default="")
    grading_enabled = models.BooleanField(default=False)
    # `none` is grading off; `grading_enabled` and `grading_mode` always agree (see `save`).
    grading_mode = models.CharField(max_length=10, choices=GradingMode.choices, default=GradingMode.AUTO)
    # The pass mark when the Grading Engine sends no cut score (null: SystemSettings.pass_percent).
    pass_percent = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    # After grading, the stopped lab is kept this long for an instructor to inspect (0: no hold).
    hold_for_review_hours = models.PositiveIntegerField(default=0)
    lab_reuse_enabled = models.BooleanField(default=True)
    status = FSMField(default=DefinitionStatus.ACTIVE, choices=DefinitionStatus.choices, protected=True)
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # One `to_<status>` transition per target, generated from the table in states.py.
    locals().update(transitions_from_table(status, DEFINITION_TRANSITIONS))

    class Meta:
        db_table = "lablet_definitions"
        ordering = ["name", "-created_at"]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="uniq_definition_name_version")]

    def __str__(self):
        return f"{self.name} {self.version}"

    def save(self, *args, **kwargs):
        # Grading off is mode `none`, and mode `none` is grading off.
        if not self.grading_enabled:
            self.grading_mode = GradingMode.NONE
        elif self.grading_mode == GradingMode.NONE:
            self.grading_enabled = False
        super().save(*args, **kwargs)

    @property
    def resource_requirements(self) -> dict:
        """The `{cpu_cores, memory_gb, storage_gb}` a session of this definition claims on its worker."""
        return {"cpu_cores": self.cpu_cores, "memory_gb": self.memory_gb, "storage_gb": self.storage_gb}

    @property
    def port_names(self) -> list[str]:
        """Names of the ports a lab of this definition needs, in template order."""
        return [entry["name"] for entry in self.port_template]


class Exam(models.Model):
    """A class's exam (SPEC §8): one definition, one timeslot, a roster of sessions booked together.

    It holds no state machine of its own: its status is the counts of its sessions by state.
    """

    name = models.CharField(max_length=200)
    definition = models.ForeignKey(LabletDefinition, on_delete=models.PROTECT, related_name="exams")
    timeslot_start = models.DateTimeField(db_index=True)
    timeslot_end = models.DateTimeField()
    notes = models.TextField(blank=True, default="")
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "exams"
        ordering = ["-timeslot_start", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(timeslot_end__gt=models.F("timeslot_start")), name="exam_timeslot_order"
            )
        ]

    def __str__(self):
        return self.name


class LabletSession(ConcurrentTransitionMixin, models.Model):
    """One candidate's lablet for one timeslot: the aggregate every loop and page works on.

    `status` follows SESSION_TRANSITIONS (SPEC §2.2); capacity on `worker` is derived
    from the sessions holding it (see `scheduling.selectors.worker_capacities`).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    definition = models.ForeignKey(LabletDefinition, on_delete=models.PROTECT, related_name="sessions")
    definition_version = models.CharField(max_length=50)
    owner = models.CharField(max_length=200, db_index=True)
    exam = models.ForeignKey(Exam, null=True, blank=True, on_delete=models.PROTECT, related_name="sessions")
    reservation_id = models.CharField(max_length=200, null=True, blank=True, unique=True)
    status = FSMField(default=SessionStatus.PENDING, choices=SessionStatus.choices, protected=True, db_index=True)
    timeslot_start = models.DateTimeField(db_index=True)
    timeslot_end = models.DateTimeField()
    worker = models.ForeignKey(
        "workers.CMLWorker", null=True, blank=True, on_delete=models.PROTECT, related_name="sessions"
    )
    lab_record = models.ForeignKey(
        "workers.LabRecord", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    # Requeued with "do not place it on this worker again": placement passes over this worker (issue 19).
    excluded_worker = models.ForeignKey(
        "workers.CMLWorker", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    cml_lab_id = models.CharField(max_length=100, blank=True, default="")
    allocated_ports = models.JSONField(default=dict, blank=True)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    end_reason = models.CharField(max_length=20, choices=EndReason.choices, blank=True, default="")
    end_reason_detail = models.TextField(blank=True, default="")
    cleanup_pending = models.BooleanField(default=False)
    # While held for review (SPEC §3.4): a STOPPED session keeps its stopped lab until then, and archives after.
    hold_until = models.DateTimeField(null=True, blank=True)
    grade_result = models.CharField(
        max_length=4, choices=[("PASS", "PASS"), ("FAIL", "FAIL")], null=True, blank=True, default=None
    )
    status_changed_at = models.DateTimeField(null=True, blank=True)
    # Lab drift (SPEC §11): the reconciler found the READY/RUNNING session's lab gone or not running in CML.
    # Not a state of its own: the session keeps its status, flagged, until its lab is back (Re-instantiate).
    degraded_at = models.DateTimeField(null=True, blank=True)
    degraded_reason = models.TextField(blank=True, default="")
    # When the drift check last asked CML about the session's lab (at most once per LCM_DRIFT_CHECK_SECONDS).
    lab_checked_at = models.DateTimeField(null=True, blank=True)
    # An instructor asked for a fresh lab with the same ports (Re-instantiate); cleared when it is booted.
    reinstantiate_requested_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    locals().update(transitions_from_table(status, SESSION_TRANSITIONS))

    class Meta:
        db_table = "lablet_sessions"
        ordering = ["timeslot_start", "created_at"]
        indexes = [models.Index(fields=["status", "timeslot_start"], name="session_status_start_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(timeslot_end__gt=models.F("timeslot_start")), name="session_timeslot_order"
            )
        ]

    def __str__(self):
        return f"{self.owner} · {self.definition_id and self.definition.name} [{self.status}]"

    @property
    def user_session(self):
        """The current UserSession (the newest), or None."""
        return _newest(self.user_sessions.all())

    @property
    def grading_session(self):
        """The current GradingSession (the newest), or None."""
        return _newest(self.grading_sessions.all())

    @property
    def score_report(self):
        """The stored ScoreReport (the newest), or None."""
        return _newest(self.score_reports.all())


class SessionStatusChange(StatusChange):
    """One row per status change of a session or of one of its children, written in the same transaction."""

    class Entity(models.TextChoices):
        SESSION = "session"
        USER_SESSION = "user_session"
        GRADING_SESSION = "grading_session"

    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(LabletSession, on_delete=models.CASCADE, related_name="history")
    entity = models.CharField(max_length=20, choices=Entity.choices, default=Entity.SESSION)
    locals().update(status_change_columns())

    class Meta(StatusChange.Meta):
        db_table = "lablet_session_status_changes"


class ExternalSession(ConcurrentTransitionMixin, models.Model):
    """What an external system keeps for one lablet session (LDS, the Grading Engine): the common columns.

    A subclass adds its `lablet_session` link, the external ids, its `status` FSM field, and
    `external_label`/`external_id_field` for `__str__`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    error_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    external_label = ""
    external_id_field = ""

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.external_label} {getattr(self, self.external_id_field) or '(pending)'} [{self.status}]"


class UserSession(ExternalSession):
    """The candidate's LDS session for a lablet session: login URL and devices (SPEC §2.3)."""

    lablet_session = models.ForeignKey(LabletSession, on_delete=models.CASCADE, related_name="user_sessions")
    lds_session_id = models.CharField(max_length=200, blank=True, default="", db_index=True)
    lds_part_id = models.CharField(max_length=200, blank=True, default="")
    login_url = models.URLField(max_length=1000, blank=True, default="")
    devices = models.JSONField(default=list, blank=True)
    # The end LDS was last seen to hold for the candidate (sent at create, converged after an extension).
    lds_ends_at = models.DateTimeField(null=True, blank=True)
    status = FSMField(default=UserSessionStatus.PROVISIONING, choices=UserSessionStatus.choices, protected=True)

    locals().update(transitions_from_table(status, USER_SESSION_TRANSITIONS))

    external_label = "LDS"
    external_id_field = "lds_session_id"

    class Meta(ExternalSession.Meta):
        db_table = "user_sessions"
