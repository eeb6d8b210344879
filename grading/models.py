"""Grading sessions, score reports and their sections (SPEC §2.3); evidence and re-grades (SPEC §9)."""

import uuid

from django.db import models
from django_fsm import FSMField

from grading.states import (
    EVIDENCE_KINDS,
    EVIDENCE_TRANSITIONS,
    GRADING_TRANSITIONS,
    REGRADE_TRANSITIONS,
    EvidenceStatus,
    GradingStatus,
    RegradeStatus,
)
from lcm.fsm import transitions_from_table
from sessions.models import ExternalSession


class GradingSession(ExternalSession):
    """The Grading Engine's view of one lablet session being graded."""

    lablet_session = models.ForeignKey(
        "lablets.LabletSession", on_delete=models.CASCADE, related_name="grading_sessions"
    )
    grading_session_id = models.CharField(max_length=200, blank=True, default="", db_index=True)
    grading_part_id = models.CharField(max_length=200, blank=True, default="")
    pod_id = models.CharField(max_length=200, blank=True, default="")
    status = FSMField(default=GradingStatus.PENDING, choices=GradingStatus.choices, protected=True)
    # A grading closed by hand (Complete Grading, Terminate) releases its Grading Engine session at teardown.
    release_pending = models.BooleanField(default=False)
    engine_released_at = models.DateTimeField(null=True, blank=True)

    locals().update(transitions_from_table(status, GRADING_TRANSITIONS))

    external_label = "Grading"
    external_id_field = "grading_session_id"

    class Meta(ExternalSession.Meta):
        db_table = "grading_sessions"


class ScoreReport(models.Model):
    """The immutable result of grading one session. Creating it sets the session's `grade_result`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    lablet_session = models.ForeignKey("lablets.LabletSession", on_delete=models.CASCADE, related_name="score_reports")
    grading_session = models.ForeignKey(
        GradingSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="score_reports"
    )
    score = models.DecimalField(max_digits=10, decimal_places=2)
    max_score = models.DecimalField(max_digits=10, decimal_places=2)
    cut_score = models.DecimalField(max_digits=10, decimal_places=2)
    passed = models.BooleanField()
    manual = models.BooleanField(default=False)
    submitted_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "score_reports"
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.score}/{self.max_score} ({'PASS' if self.passed else 'FAIL'})"

    def save(self, *args, **kwargs):
        """Score reports are written once; a correction is a new report."""
        if not self._state.adding:
            raise ValueError("score reports are immutable")
        super().save(*args, **kwargs)


class ScoreSection(models.Model):
    """One section of a score report."""

    id = models.BigAutoField(primary_key=True)
    report = models.ForeignKey(ScoreReport, on_delete=models.CASCADE, related_name="sections")
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=300)
    score = models.DecimalField(max_digits=10, decimal_places=2)
    max_score = models.DecimalField(max_digits=10, decimal_places=2)
    weight = models.DecimalField(max_digits=6, decimal_places=3, default=1)
    passed = models.BooleanField(null=True, blank=True)

    class Meta:
        db_table = "score_sections"
        ordering = ["report", "position"]

    def __str__(self):
        return f"{self.name}: {self.score}/{self.max_score}"


class EvidenceCollection(models.Model):
    """The evidence of one session's lab, collected before the lab is wiped or deleted (SPEC §9).

    Made by the first teardown pass that needs it (`started_at`: when teardown began waiting for it); RECORDED
    once every item is stored, MISSING (with `reason`) when it could not be within the evidence timeout.
    `swept_at`: objects under the session's prefix that no item names (a crash between an object's write and
    its row) were deleted then.
    """

    id = models.BigAutoField(primary_key=True)
    lablet_session = models.OneToOneField(
        "lablets.LabletSession", on_delete=models.CASCADE, related_name="evidence_collection"
    )
    status = FSMField(default=EvidenceStatus.COLLECTING, choices=EvidenceStatus.choices, protected=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    swept_at = models.DateTimeField(null=True, blank=True)

    locals().update(transitions_from_table(status, EVIDENCE_TRANSITIONS))

    class Meta:
        db_table = "evidence_collections"

    def __str__(self):
        return f"evidence of {self.lablet_session_id} [{self.status}]"


class EvidenceItem(models.Model):
    """One stored object of a session's evidence: written to the store first, then this row (SPEC §9)."""

    Kind = models.TextChoices("Kind", [(kind.upper(), kind) for kind in EVIDENCE_KINDS])

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    lablet_session = models.ForeignKey("lablets.LabletSession", on_delete=models.CASCADE, related_name="evidence")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=300, blank=True, default="")
    object_key = models.CharField(max_length=500, unique=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField(default=0)
    content_type = models.CharField(max_length=100, default="application/octet-stream")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Set by the retention loop once the object is deleted from the store (the row stays as the record).
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "evidence_items"
        ordering = ["lablet_session", "kind", "name"]

    def __str__(self):
        return f"{self.kind} {self.name}".strip()

    @property
    def state(self) -> str:
        return "EXPIRED" if self.expired_at else "STORED"


class Regrade(models.Model):
    """A re-grade of an ARCHIVED session from its evidence lab (SPEC §9), driven by the `regrades` loop."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    lablet_session = models.ForeignKey("lablets.LabletSession", on_delete=models.CASCADE, related_name="regrades")
    status = FSMField(default=RegradeStatus.REQUESTED, choices=RegradeStatus.choices, protected=True, db_index=True)
    requested_by = models.CharField(max_length=150, blank=True, default="")
    worker = models.ForeignKey("workers.CMLWorker", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    lab_record = models.ForeignKey(
        "workers.LabRecord", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    grading_session = models.ForeignKey(
        GradingSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    score_report = models.ForeignKey(ScoreReport, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True, default="")  # why it failed (it still tears down, then ends FAILED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")  # the last failed pass (retried with backoff)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    locals().update(transitions_from_table(status, REGRADE_TRANSITIONS))

    class Meta:
        db_table = "regrades"
        ordering = ["-created_at"]

    def __str__(self):
        return f"re-grade of {self.lablet_session_id} [{self.status}]"
