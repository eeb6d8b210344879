"""Admin for definitions, lablet sessions, their history and user sessions (SPEC §5.5).

Statuses are read-only; they change only through the actions below, which call
`sessions.services`. Definitions and sessions are created by `definition_create` and
`session_create`; a published definition and an existing session are read-only.
"""

from django import forms
from django.contrib import admin
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from lcm.admin_utils import (
    ActionsOnlyAdmin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    ServiceModelForm,
    ServiceSaveMixin,
    model_field_names,
    service_action,
)
from sessions.booking import session_create
from sessions.definitions import definition_create, definition_transition
from sessions.models import Exam, LabletDefinition, LabletSession, SessionStatusChange, UserSession
from sessions.services import (
    session_reinstantiate,
    session_requeue,
    session_terminate,
    session_transition,
    user_session_update,
)
from sessions.states import ACTIVE, DefinitionStatus, SessionStatus
from workers.states import LicenseType

# The history reason of every change made from the admin.
ADMIN_REASON = "admin action"


# ---------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------

DEFINITION_ADD_FIELDS = (
    "name", "version", "description", "lab_yaml", "lab_artifact_uri", "cpu_cores", "memory_gb", "storage_gb",
    "license_affinity", "cml_version_min", "cml_version_max", "max_duration_minutes", "boot_lead_minutes",
    "form_qualified_name", "grading_mode", "pass_percent", "hold_for_review_hours", "lab_reuse_enabled",
)  # fmt: skip


class DefinitionAddForm(ServiceModelForm):
    """Publishes a definition through `definition_create`, which validates the YAML and every field."""

    validate_model = False
    license_affinity = forms.MultipleChoiceField(
        choices=LicenseType.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Licences a worker may have to run this lab; none ticked = any.",
    )

    class Meta:
        model = LabletDefinition
        fields = DEFINITION_ADD_FIELDS

    def call_service(self, actor):
        return definition_create(actor=actor, **{name: self.cleaned_data.get(name) for name in DEFINITION_ADD_FIELDS})


def _definition_action(name, label, target, confirm=""):
    return service_action(
        name, label, lambda definition, request: definition_transition(
            definition, target, actor=request.user, reason=ADMIN_REASON
        ), confirm=confirm,
    )  # fmt: skip


@admin.register(LabletDefinition)
class LabletDefinitionAdmin(ServiceSaveMixin, ActionsOnlyAdmin):
    """Definitions are added through the service; a published version is immutable (status via actions)."""

    form = DefinitionAddForm
    list_display = (
        "name",
        "version",
        "status",
        "node_count",
        "cpu_cores",
        "memory_gb",
        "grading_enabled",
        "created_at",
    )
    list_filter = ("status", "grading_enabled", "lab_reuse_enabled")
    search_fields = ("name", "version", "form_qualified_name", "id__exact")
    date_hierarchy = "created_at"
    readonly_fields = (
        "id", "status", "topology", "lab_yaml_hash", "node_count", "node_definitions_required", "port_template",
        "created_by", "created_at", "updated_at",
    )  # fmt: skip
    add_fieldsets = (
        (None, {"fields": ("name", "version", "description", "form_qualified_name")}),
        ("Grading", {"fields": ("grading_mode", "pass_percent", "hold_for_review_hours")}),
        ("Topology", {"fields": ("lab_yaml", "lab_artifact_uri", "lab_reuse_enabled")}),
        (
            "Requirements",
            {
                "fields": (
                    ("cpu_cores", "memory_gb", "storage_gb"),
                    "license_affinity",
                    ("cml_version_min", "cml_version_max"),
                    "max_duration_minutes",
                    "boot_lead_minutes",
                )
            },
        ),
    )
    fieldsets = (
        (None, {"fields": ("name", "version", "status", "description", "form_qualified_name")}),
        ("Grading", {"fields": ("grading_mode", "pass_percent", "hold_for_review_hours")}),
        (
            "Topology",
            {
                "fields": (
                    "topology",
                    "lab_artifact_uri",
                    "lab_yaml_hash",
                    "node_count",
                    "node_definitions_required",
                    "port_template",
                    "lab_reuse_enabled",
                )
            },
        ),
        (
            "Requirements",
            {
                "fields": (
                    ("cpu_cores", "memory_gb", "storage_gb"),
                    "license_affinity",
                    ("cml_version_min", "cml_version_max"),
                    "max_duration_minutes",
                    "boot_lead_minutes",
                )
            },
        ),
        ("Record", {"fields": ("id", "created_by", "created_at", "updated_at")}),
    )
    actions = [
        _definition_action("activate_definitions", "Activate (→ ACTIVE)", DefinitionStatus.ACTIVE),
        _definition_action(
            "deactivate_definitions",
            "Deactivate (→ INACTIVE)",
            DefinitionStatus.INACTIVE,
            "No new session can be booked on them until they are activated again.",
        ),
        _definition_action(
            "deprecate_definitions",
            "Deprecate (→ DEPRECATED)",
            DefinitionStatus.DEPRECATED,
            "No new session can be booked on them.",
        ),
        _definition_action(
            "archive_definitions",
            "Archive (→ ARCHIVED)",
            DefinitionStatus.ARCHIVED,
            "No new session can use them and they cannot be re-activated.",
        ),
    ]

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:
            kwargs["form"] = forms.ModelForm  # the change page is view-only; the add form is the service's
        return super().get_form(request, obj, **kwargs)

    @admin.display(description="Lab YAML")
    def topology(self, obj):
        """The topology with its indentation kept (YAML is unreadable without it); a named region a keyboard
        can focus to scroll it."""
        return format_html(
            '<pre style="max-height: 30em; overflow: auto" tabindex="0" role="region" aria-label="Lab YAML">{}</pre>',
            obj.lab_yaml,
        )


# ---------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------

SESSION_ADD_FIELDS = ("definition", "owner", "reservation_id", "timeslot_start", "timeslot_end")


class SessionAddForm(ServiceModelForm):
    """Books a session through `session_create` (timeslot rules, ACTIVE definition, unique reservation)."""

    validate_model = False
    service_error_fields = {"definition_id": "definition"}

    class Meta:
        model = LabletSession
        fields = SESSION_ADD_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        optional = {
            "reservation_id": "The upstream booking id, if any (unique).",
            "timeslot_start": "Empty = as soon as possible.",
            "timeslot_end": "Empty = start + the definition's maximum duration.",
        }
        for name, help_text in optional.items():
            if name in self.fields:
                self.fields[name].required = False
                self.fields[name].help_text = help_text

    def call_service(self, actor):
        data = self.cleaned_data
        return session_create(
            definition=data["definition"],
            owner=data["owner"],
            actor=actor,
            timeslot_start=data.get("timeslot_start"),
            timeslot_end=data.get("timeslot_end"),
            reservation_id=data.get("reservation_id") or None,
            reason="booked in admin",
        )


class SessionStatusChangeInline(ReadOnlyInline):
    model = SessionStatusChange
    fields = readonly_fields = ("at", "entity", "from_status", "to_status", "actor", "reason", "request_id")
    ordering = ("at", "id")
    verbose_name_plural = "Status history"


class UserSessionInline(ReadOnlyInline):
    model = UserSession
    fields = readonly_fields = ("status", "lds_session_id", "login_url", "error_message", "created_at")
    show_change_link = True


def _session_action(name, label, target, confirm=""):
    return service_action(
        name, label, lambda session, request: session_transition(
            session, target, actor=request.user, reason=ADMIN_REASON
        ), confirm=confirm,
    )  # fmt: skip


@admin.register(LabletSession)
class LabletSessionAdmin(ServiceSaveMixin, ActionsOnlyAdmin):
    """Sessions are booked through the service; afterwards they change only through the actions."""

    form = SessionAddForm
    list_display = (
        "owner", "definition", "status", "timeslot_start", "timeslot_end", "worker", "grade_result",
        "cleanup_pending", "created_at",
    )  # fmt: skip
    list_filter = ("status", "end_reason", "grade_result", "cleanup_pending", "definition", "worker")
    search_fields = ("owner", "reservation_id", "cml_lab_id", "definition__name", "worker__name", "id__exact")
    date_hierarchy = "timeslot_start"
    list_select_related = ("definition", "worker")
    readonly_fields = model_field_names(LabletSession, exclude=SESSION_ADD_FIELDS)
    add_fieldsets = ((None, {"fields": SESSION_ADD_FIELDS}),)
    fieldsets = (
        (None, {"fields": ("id", "owner", "definition", "definition_version", "status", "reservation_id")}),
        (
            "Timeslot",
            {
                "fields": (
                    ("timeslot_start", "timeslot_end"),
                    "scheduled_at",
                    "started_at",
                    "ended_at",
                    "duration_seconds",
                )
            },
        ),
        ("Placement", {"fields": ("worker", "excluded_worker", "lab_record", "cml_lab_id", "allocated_ports")}),
        ("Outcome", {"fields": ("end_reason", "end_reason_detail", "grade_result", "cleanup_pending")}),
        ("Reconciler", {"fields": ("attempts", "last_error", "next_attempt_at")}),
        (
            "Lab drift",
            {"fields": ("degraded_at", "degraded_reason", "lab_checked_at", "reinstantiate_requested_at")},
        ),
        ("Record", {"fields": ("created_by", "created_at", "updated_at")}),
    )
    # The grading app adds its inlines (grading session, score report): grading depends on sessions.
    inlines = (SessionStatusChangeInline, UserSessionInline)
    actions = [
        service_action(
            "terminate_sessions",
            "Terminate (→ TERMINATED)",
            lambda session, request: session_terminate(session, actor=request.user, reason=ADMIN_REASON),
            confirm="Their labs are torn down and the candidates lose access. This cannot be undone.",
        ),
        service_action(
            "requeue_sessions",
            "Requeue (SCHEDULED → PENDING, otherwise retry now)",
            lambda session, request: session_requeue(session, actor=request.user, reason=ADMIN_REASON),
            confirm="A SCHEDULED one leaves its worker and is placed again at the next placement tick (its lab was "
            "not started); any other active one is retried now.",
        ),
        service_action(
            "requeue_sessions_elsewhere",
            "Requeue, not on the same worker again (SCHEDULED → PENDING)",
            lambda session, request: session_requeue(
                session, actor=request.user, reason=ADMIN_REASON, exclude_worker=True
            ),
            confirm="Each SCHEDULED one leaves its worker and is placed again at the next placement tick, never on "
            "that worker again (it waits when no other fits).",
        ),
        service_action(
            "reinstantiate_sessions",
            "Re-instantiate (a degraded session: a fresh lab, same ports)",
            lambda session, request: session_reinstantiate(session, actor=request.user, reason=ADMIN_REASON),
            confirm="What is left of their labs is deleted and fresh labs come up; work on the old devices is lost.",
        ),
        _session_action("start_sessions", "Start session (→ RUNNING)", SessionStatus.RUNNING),
        _session_action(
            "finish_sessions",
            "Finish session (→ COLLECTING)",
            SessionStatus.COLLECTING,
            "The candidates lose access to their labs now; grading or teardown follows.",
        ),
        _session_action("start_grading", "Start grading (→ GRADING)", SessionStatus.GRADING),
        _session_action(
            "stop_sessions",
            "Stop (→ STOPPING)",
            SessionStatus.STOPPING,
            "Their labs are stopped and wiped; a session not yet graded gets no score.",
        ),
        _session_action(
            "archive_sessions",
            "Archive (→ ARCHIVED)",
            SessionStatus.ARCHIVED,
            "A lab kept for review is wiped and can no longer be inspected.",
        ),
    ]

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is None else model_field_names(LabletSession)

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:
            kwargs["form"] = forms.ModelForm  # the change page is view-only; the add form is the service's
        return super().get_form(request, obj, **kwargs)

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "definition":
            # Sessions are only booked on ACTIVE definitions (the service says so too).
            kwargs["queryset"] = LabletDefinition.objects.filter(status=DefinitionStatus.ACTIVE)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(SessionStatusChange)
class SessionStatusChangeAdmin(ReadOnlyAdmin):
    """The audit trail: written in the same transaction as each change, never edited."""

    list_display = ("at", "session", "entity", "from_status", "to_status", "actor", "reason")
    list_filter = ("entity", "to_status", "from_status")
    search_fields = ("session__owner", "actor", "reason", "request_id", "session__id__exact")
    date_hierarchy = "at"
    list_select_related = ("session__definition",)


# ---------------------------------------------------------------------------------------
# User sessions
# ---------------------------------------------------------------------------------------

USER_SESSION_EDIT_FIELDS = ("lds_session_id", "lds_part_id", "login_url", "devices", "error_message")


class UserSessionForm(ServiceModelForm):
    """Edits the LDS ids and devices through `user_session_update`; the status stays as it is."""

    class Meta:
        model = UserSession
        fields = USER_SESSION_EDIT_FIELDS

    def call_service(self, actor):
        changes = {name: self.cleaned_data[name] for name in USER_SESSION_EDIT_FIELDS if name in self.cleaned_data}
        return user_session_update(self.instance, actor=actor, reason="edited in admin", **changes)


class SessionChildAdmin(ServiceSaveMixin, admin.ModelAdmin):
    """A child a session's transition creates (its UserSession, its GradingSession): the external ids may be
    corrected through the form's service, the status only moves by the services; never added or deleted here."""

    list_filter = ("status",)
    date_hierarchy = "created_at"
    list_select_related = ("lablet_session__definition",)
    readonly_fields = ("id", "lablet_session", "status", "created_at", "updated_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UserSession)
class UserSessionAdmin(SessionChildAdmin):
    """Created by the → READY transition; the LDS fields may be corrected."""

    form = UserSessionForm
    list_display = ("lablet_session", "status", "lds_session_id", "login_url", "created_at")
    search_fields = ("lds_session_id", "lds_part_id", "lablet_session__owner", "lablet_session__id__exact")
    fields = ("id", "lablet_session", "status", *USER_SESSION_EDIT_FIELDS, "created_at", "updated_at")


# ---------------------------------------------------------------------------------------
# Exams
# ---------------------------------------------------------------------------------------


class ExamSessionInline(ReadOnlyInline):
    model = LabletSession
    fields = readonly_fields = ("owner", "reservation_id", "status", "timeslot_end", "grade_result")
    ordering = ("owner",)
    show_change_link = True
    verbose_name_plural = "Sessions"


@admin.register(Exam)
class ExamAdmin(ReadOnlyAdmin):
    """Exams are booked through `sessions.exams.exam_book` (the exam pages, REST, `manage.py exam_book`); here
    they are read with their sessions counted. Their sessions change through the session actions."""

    list_display = ("name", "definition", "timeslot_start", "timeslot_end", "sessions_total", "sessions_active",
                    "sessions_passed", "sessions_link", "created_by")  # fmt: skip
    list_filter = ("definition",)
    search_fields = ("name", "notes", "definition__name", "created_by")
    date_hierarchy = "timeslot_start"
    list_select_related = ("definition",)
    inlines = (ExamSessionInline,)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_total=Count("sessions"),
                n_active=Count("sessions", filter=Q(sessions__status__in=ACTIVE)),
                n_passed=Count("sessions", filter=Q(sessions__grade_result="PASS")),
            )
        )

    @admin.display(description="sessions", ordering="n_total")
    def sessions_total(self, exam):
        return exam.n_total

    @admin.display(description="active", ordering="n_active")
    def sessions_active(self, exam):
        return exam.n_active

    @admin.display(description="passed", ordering="n_passed")
    def sessions_passed(self, exam):
        return exam.n_passed

    @admin.display(description="")
    def sessions_link(self, exam):
        url = reverse("admin:lablets_labletsession_changelist") + f"?exam__id__exact={exam.pk}"
        return format_html('<a href="{}">sessions</a>', url)
