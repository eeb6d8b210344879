"""Admin for worker templates, CML workers (+ history), lab records and ports (SPEC §5.5).

A worker's `status` is what is and `desired_status` what an admin wants; both are read-only
here and move only through the actions below (`workers.services`). Templates are plain
configuration, edited through `template_update`. Lab records and ports mirror CML and are
written by the reconcilers, so they are read-only.
"""

from django import forms
from django.contrib import admin

from lcm.admin_utils import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    ServiceModelForm,
    ServiceSaveMixin,
    model_field_names,
    service_action,
)
from workers.models import (
    CMLWorker,
    FleetSample,
    LabRecord,
    LicenseRequest,
    Port,
    ScaleDecision,
    WorkerStatusChange,
    WorkerTemplate,
)
from workers.services import worker_cancel_drain, worker_create, worker_drain, worker_set_desired
from workers.states import DesiredStatus, LicenseType
from workers.template_services import template_update

# The history reason of every change made from the admin.
ADMIN_REASON = "admin action"


# ---------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------

TEMPLATE_EDIT_FIELDS = (
    "description", "instance_type", "ami_name_pattern", "region", "license_type", "cpu_cores", "memory_gb",
    "storage_gb", "max_nodes", "port_range_start", "port_range_end", "startup_minutes", "cost_per_hour", "enabled",
)  # fmt: skip


class TemplateAddForm(forms.ModelForm):
    """A new template (there is no create service: templates are seeded from YAML or added here)."""

    def clean(self):
        data = super().clean()
        start, end = data.get("port_range_start"), data.get("port_range_end")
        # The same rule `template_update` applies to an existing template.
        if start is not None and end is not None and not 1 <= start <= end <= 65535:
            self.add_error("port_range_end", "port range must satisfy 1 ≤ start ≤ end ≤ 65535")
        return data


class TemplateChangeForm(ServiceModelForm):
    """Edits a template through `template_update` (validated as in the templates YAML file)."""

    class Meta:
        model = WorkerTemplate
        fields = TEMPLATE_EDIT_FIELDS

    def call_service(self, actor):
        changes = {name: self.cleaned_data[name] for name in TEMPLATE_EDIT_FIELDS if name in self.cleaned_data}
        return template_update(self.instance, actor=actor, **changes)


@admin.register(WorkerTemplate)
class WorkerTemplateAdmin(ServiceSaveMixin, admin.ModelAdmin):
    """Plain configuration; disable a template (`enabled`) rather than delete it (the seed would recreate it)."""

    form = TemplateAddForm
    list_display = (
        "name", "instance_type", "region", "license_type", "cpu_cores", "memory_gb", "storage_gb", "max_nodes",
        "cost_per_hour", "enabled",
    )  # fmt: skip
    list_filter = ("enabled", "region", "license_type")
    search_fields = ("name", "instance_type", "region", "ami_name_pattern")
    readonly_fields = ("id", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        # `template_update` keeps the name: it is how the YAML seed matches templates.
        return self.readonly_fields if obj is None else ("name", *self.readonly_fields)

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:
            kwargs["form"] = TemplateChangeForm
        return super().get_form(request, obj, **kwargs)

    def has_delete_permission(self, request, obj=None):
        return False


# ---------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------

WORKER_CAPACITY_FIELDS = ("cpu_cores", "memory_gb", "storage_gb", "max_nodes", "port_range_start", "port_range_end")
# Editable on an existing worker: declared capacity (SPEC §2.4) and idle detection.
WORKER_EDIT_FIELDS = (*WORKER_CAPACITY_FIELDS, "idle_detection_enabled")
# Chosen when a worker is added; afterwards set by discovery and the reconcilers.
WORKER_IDENTITY_FIELDS = ("name", "template", "region", "instance_type", "license_type", "cml_base_url", "cml_version")
# Left empty on the add form, these come from the template (or the model defaults).
WORKER_FROM_TEMPLATE = ("region", "instance_type", "license_type", *WORKER_CAPACITY_FIELDS)


class WorkerAddForm(ServiceModelForm):
    """Adds a worker through `worker_create`; capacity left empty is copied from the template."""

    validate_model = False

    class Meta:
        model = CMLWorker
        fields = (*WORKER_IDENTITY_FIELDS, *WORKER_EDIT_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in WORKER_FROM_TEMPLATE:
            self.initial.pop(name, None)  # the model defaults would otherwise override the template
            if name in self.fields:
                self.fields[name].required = False
                self.fields[name].help_text = "Empty = from the template (or the default)."
        if "license_type" in self.fields:
            self.fields["license_type"].choices = [("", "(from the template)"), *LicenseType.choices]

    def call_service(self, actor):
        data = dict(self.cleaned_data)
        name, template = data.pop("name"), data.pop("template", None)
        fields = {key: value for key, value in data.items() if value not in (None, "")}
        return worker_create(name=name, template=template, actor=actor, reason="added in admin", **fields)


class WorkerStatusChangeInline(ReadOnlyInline):
    model = WorkerStatusChange
    fields = readonly_fields = ("at", "field", "from_status", "to_status", "actor", "reason", "request_id")
    ordering = ("at", "id")
    verbose_name_plural = "Status history"


class LabRecordInline(ReadOnlyInline):
    model = LabRecord
    fk_name = "worker"
    fields = readonly_fields = ("title", "cml_lab_id", "status", "definition", "active_session", "last_synced_at")
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("definition", "active_session__definition")


def _set_desired(name, desired, confirm=""):
    return service_action(
        name,
        f"Set desired status {desired}",
        lambda worker, request: worker_set_desired(worker, desired, actor=request.user, reason=ADMIN_REASON),
        confirm=confirm,
    )


def _drain(worker, request):
    return worker_drain(worker, actor=request.user, reason=ADMIN_REASON)


def _cancel_drain(worker, request):
    return worker_cancel_drain(worker, actor=request.user, reason=ADMIN_REASON)


@admin.register(CMLWorker)
class CMLWorkerAdmin(ServiceSaveMixin, admin.ModelAdmin):
    """Capacity and idle detection are editable; statuses move only through the actions."""

    form = WorkerAddForm
    list_display = (
        "name", "status", "desired_status", "template", "region", "license_type", "cml_version", "cpu_cores",
        "memory_gb", "max_nodes", "last_activity_at",
    )  # fmt: skip
    list_filter = ("status", "desired_status", "region", "license_type", "service_status", "template")
    search_fields = ("name", "aws_instance_id", "cml_base_url", "public_ip", "private_ip", "id__exact")
    list_select_related = ("template",)
    readonly_fields = model_field_names(CMLWorker, exclude=(*WORKER_IDENTITY_FIELDS, *WORKER_EDIT_FIELDS))
    add_fieldsets = (
        (None, {"fields": WORKER_IDENTITY_FIELDS}),
        ("Capacity", {"fields": (*WORKER_CAPACITY_FIELDS, "idle_detection_enabled")}),
    )
    fieldsets = (
        (None, {"fields": ("id", "name", "status", "desired_status", "service_status", "template", "region")}),
        ("CML", {"fields": ("cml_base_url", "cml_version", "license_type", "license_status", "license_error")}),
        ("AWS", {"fields": ("aws_instance_id", "instance_type", "ami_id", "public_ip", "private_ip")}),
        ("Capacity", {"fields": WORKER_CAPACITY_FIELDS}),
        (
            "Activity",
            {
                "fields": (
                    ("cpu_percent", "memory_percent", "running_nodes", "metrics_collected_at"),
                    "idle_detection_enabled",
                    "last_activity_at",
                    ("drain_started_at", "drain_deadline"),
                )
            },
        ),
        ("Reconciler", {"fields": ("attempts", "last_error", "next_attempt_at")}),
        ("Record", {"fields": ("created_by", "created_at", "updated_at")}),
    )
    inlines = (WorkerStatusChangeInline, LabRecordInline)
    actions = [
        _set_desired("set_desired_running", DesiredStatus.RUNNING),
        _set_desired(
            "set_desired_stopped",
            DesiredStatus.STOPPED,
            "Their EC2 instances are stopped with every lab on them: the sessions on them lose their labs.",
        ),
        _set_desired(
            "set_desired_terminated",
            DesiredStatus.TERMINATED,
            "Their EC2 instances are destroyed with every lab on them; the sessions on them expire. "
            "This cannot be undone.",
        ),
        service_action(
            "drain_workers",
            "Drain (RUNNING → DRAINING)",
            _drain,
            confirm="They take no new sessions; the sessions on them expire at the drain deadline.",
        ),
        service_action("cancel_drain", "Cancel drain (DRAINING → RUNNING)", _cancel_drain),
    ]

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is None else (*self.readonly_fields, *WORKER_IDENTITY_FIELDS)

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:
            kwargs["form"] = forms.ModelForm  # no worker-update service: capacity is saved as a plain edit
        return super().get_form(request, obj, **kwargs)

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        return False  # a worker is retired by desired status TERMINATED, never deleted


@admin.register(WorkerStatusChange)
class WorkerStatusChangeAdmin(ReadOnlyAdmin):
    """The audit trail of `status` and `desired_status`, written with each change."""

    list_display = ("at", "worker", "field", "from_status", "to_status", "actor", "reason")
    list_filter = ("field", "to_status", "from_status")
    search_fields = ("worker__name", "actor", "reason", "request_id")
    date_hierarchy = "at"
    list_select_related = ("worker",)
    readonly_fields = model_field_names(WorkerStatusChange)


# ---------------------------------------------------------------------------------------
# Lab records and ports
# ---------------------------------------------------------------------------------------


class PortInline(ReadOnlyInline):
    model = Port
    fields = readonly_fields = ("name", "port", "allocated_at")
    ordering = ("port",)


@admin.register(LabRecord)
class LabRecordAdmin(ReadOnlyAdmin):
    """What LCM knows of one CML lab; written by the reconcilers (`lab_record_transition`)."""

    list_display = (
        "title", "cml_lab_id", "worker", "status", "definition", "active_session", "node_count", "last_synced_at",
    )  # fmt: skip
    list_filter = ("status", "worker")
    search_fields = ("cml_lab_id", "title", "worker__name", "definition__name", "id__exact")
    date_hierarchy = "created_at"
    list_select_related = ("worker", "definition", "active_session__definition")
    readonly_fields = model_field_names(LabRecord)
    inlines = (PortInline,)


@admin.register(Port)
class PortAdmin(ReadOnlyAdmin):
    """The port table; allocated and released only by `workers.port_services`."""

    list_display = ("worker", "port", "name", "lab_record", "allocated_at")
    list_filter = ("worker",)
    search_fields = ("name", "port", "worker__name", "lab_record__cml_lab_id")
    list_select_related = ("worker", "lab_record")
    readonly_fields = model_field_names(Port)


@admin.register(FleetSample)
class FleetSampleAdmin(ReadOnlyAdmin):
    """The fleet's utilisation over time (written by the fleet_samples loop; the dashboard's chart)."""

    list_display = ("at", "workers", "cpu_used", "cpu_total", "memory_used", "memory_total", "nodes_used")
    list_filter = ("workers",)
    search_fields = ("at",)
    date_hierarchy = "at"


@admin.register(ScaleDecision)
class ScaleDecisionAdmin(ReadOnlyAdmin):
    """Every autoscaling decision with its reason (written by the autoscaler loop)."""

    list_display = ("at", "action", "region", "template", "worker", "reason", "actor")
    list_filter = ("action", "region")
    search_fields = ("reason", "worker__name")
    date_hierarchy = "at"
    list_select_related = ("template", "worker")


@admin.register(LicenseRequest)
class LicenseRequestAdmin(ReadOnlyAdmin):
    """Licence register/deregister intents and their outcome. The registration token is never shown."""

    list_display = ("requested_at", "worker", "action", "outcome", "requested_by", "finished_at", "error")
    list_filter = ("action", "outcome")
    search_fields = ("worker__name", "requested_by", "error")
    list_select_related = ("worker",)
    exclude = ("token",)

    def get_fields(self, request, obj=None):
        return [f for f in super().get_fields(request, obj) if f != "token"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.concrete_fields if f.name != "token"]
