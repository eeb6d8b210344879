"""Grading sessions, score reports and their sections (SPEC §2.3)."""

import uuid

from django.db import models
from django_fsm import FSMField

from grading.states import GRADING_TRANSITIONS, GradingStatus
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
