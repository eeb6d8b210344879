"""Admin for the SystemSettings singleton (SPEC §2.4, §5.5): one row, edited, never added twice or deleted."""

from django.contrib import admin

from lcm.fsm import actor_name
from workers.models import SystemSettings


@admin.register(SystemSettings)
class SystemSettingsAdmin(admin.ModelAdmin):
    """Deployment-wide policy; `updated_by` records who changed it last."""

    list_display = (
        "__str__", "autoscaling_enabled", "idle_detection_enabled", "discovery_enabled", "default_worker_template",
        "updated_by", "updated_at",
    )  # fmt: skip
    list_select_related = ("default_worker_template",)
    search_fields = ("updated_by",)
    readonly_fields = ("updated_by", "updated_at")
    fieldsets = (
        ("Idle detection", {"fields": ("idle_detection_enabled", "idle_timeout_minutes")}),
        (
            "Autoscaling",
            {
                "fields": (
                    "autoscaling_enabled",
                    ("min_workers_per_region", "max_workers_per_region"),
                    ("scale_up_cooldown_minutes", "scale_down_cooldown_minutes"),
                    "drain_timeout_minutes",
                    "default_worker_template",
                )
            },
        ),
        ("Placement", {"fields": ("placement_lead_minutes", "boot_lead_minutes", "grading_timeout_minutes")}),
        ("Sessions", {"fields": ("max_extension_minutes",)}),
        ("Discovery", {"fields": ("discovery_enabled", "discovery_ami_pattern", "discovery_interval_minutes")}),
        ("Evidence", {"fields": ("evidence_timeout_minutes", "evidence_retention_days")}),
        ("Record", {"fields": ("updated_by", "updated_at")}),
    )

    def has_add_permission(self, request):
        # The singleton (pk=1) is created on first use; a second row would never be read.
        return not SystemSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        obj.updated_by = actor_name(request.user)
        super().save_model(request, obj, form, change)
