"""Admin for grading sessions, score reports and their sections (SPEC §5.5).

Score reports are immutable (a correction is a new report), so they are read-only with
their sections inline. A grading session's Grading Engine ids may be corrected through
`grading_session_update`; its status moves only through the services.
"""

from django.contrib import admin

from grading.models import EvidenceCollection, EvidenceItem, GradingSession, Regrade, ScoreReport, ScoreSection
from grading.services import grading_session_update
from lcm.admin_utils import ReadOnlyAdmin, ReadOnlyInline, ServiceModelForm, model_field_names
from sessions.admin import LabletSessionAdmin, SessionChildAdmin

GRADING_EDIT_FIELDS = ("grading_session_id", "grading_part_id", "pod_id", "error_message")


class GradingSessionForm(ServiceModelForm):
    """Edits the Grading Engine ids through `grading_session_update`; the status stays as it is."""

    class Meta:
        model = GradingSession
        fields = GRADING_EDIT_FIELDS

    def call_service(self, actor):
        changes = {name: self.cleaned_data[name] for name in GRADING_EDIT_FIELDS if name in self.cleaned_data}
        return grading_session_update(self.instance, actor=actor, reason="edited in admin", **changes)


class ScoreReportInline(ReadOnlyInline):
    model = ScoreReport
    fields = readonly_fields = ("score", "max_score", "cut_score", "passed", "manual", "submitted_at")
    show_change_link = True


class GradingSessionInline(ReadOnlyInline):
    model = GradingSession
    fields = readonly_fields = ("status", "grading_session_id", "pod_id", "error_message", "created_at")
    show_change_link = True


# A session's page shows its grading too (the sessions app does not know grading).
LabletSessionAdmin.inlines = (*LabletSessionAdmin.inlines, GradingSessionInline, ScoreReportInline)


@admin.register(GradingSession)
class GradingSessionAdmin(SessionChildAdmin):
    """Created by the → GRADING transition; the Grading Engine ids may be corrected."""

    form = GradingSessionForm
    list_display = ("lablet_session", "status", "grading_session_id", "pod_id", "created_at")
    search_fields = ("grading_session_id", "grading_part_id", "pod_id", "lablet_session__owner")
    fields = ("id", "lablet_session", "status", *GRADING_EDIT_FIELDS, "created_at", "updated_at")
    inlines = (ScoreReportInline,)


class ScoreSectionInline(ReadOnlyInline):
    model = ScoreSection
    fields = readonly_fields = ("position", "name", "score", "max_score", "weight", "passed")
    ordering = ("position",)


@admin.register(ScoreReport)
class ScoreReportAdmin(ReadOnlyAdmin):
    """Immutable results; `score_report_create` writes them and sets the session's grade."""

    list_display = ("lablet_session", "score", "max_score", "cut_score", "passed", "manual", "submitted_at")
    list_filter = ("passed", "manual")
    search_fields = (
        "lablet_session__owner", "lablet_session__definition__name", "created_by",
        "grading_session__grading_session_id",
    )  # fmt: skip
    date_hierarchy = "created_at"
    list_select_related = ("lablet_session__definition", "grading_session")
    readonly_fields = model_field_names(ScoreReport)
    inlines = (ScoreSectionInline,)


@admin.register(ScoreSection)
class ScoreSectionAdmin(ReadOnlyAdmin):
    """Sections of the immutable score reports."""

    list_display = ("report", "position", "name", "score", "max_score", "weight", "passed")
    list_filter = ("passed",)
    search_fields = ("name", "report__lablet_session__owner")
    list_select_related = ("report",)
    readonly_fields = model_field_names(ScoreSection)


@admin.register(EvidenceCollection)
class EvidenceCollectionAdmin(ReadOnlyAdmin):
    """A session's evidence (SPEC §9): collected by the teardown gate, RECORDED or MISSING with the reason."""

    list_display = ("lablet_session", "status", "started_at", "finished_at", "attempts", "reason")
    list_filter = ("status",)
    search_fields = ("lablet_session__owner", "reason")
    list_select_related = ("lablet_session__definition",)
    readonly_fields = model_field_names(EvidenceCollection)


@admin.register(EvidenceItem)
class EvidenceItemAdmin(ReadOnlyAdmin):
    """Stored evidence objects (their bytes are downloaded through the API; never shown here)."""

    list_display = ("lablet_session", "kind", "name", "size", "sha256", "created_at", "expired_at")
    list_filter = ("kind",)
    search_fields = ("lablet_session__owner", "object_key", "sha256")
    date_hierarchy = "created_at"
    list_select_related = ("lablet_session__definition",)
    readonly_fields = model_field_names(EvidenceItem)


@admin.register(Regrade)
class RegradeAdmin(ReadOnlyAdmin):
    """Re-grades of ARCHIVED sessions, driven by the `regrades` loop."""

    list_display = ("lablet_session", "status", "requested_by", "worker", "created_at", "finished_at", "error")
    list_filter = ("status",)
    search_fields = ("lablet_session__owner", "requested_by", "error")
    list_select_related = ("lablet_session__definition", "worker")
    readonly_fields = model_field_names(Regrade)
