"""Forms of the scheduler and settings pages."""

from django import forms
from django.core.validators import MaxValueValidator

from lcm.pages import ListOptions
from sessions.models import LabletDefinition
from sessions.states import DefinitionStatus
from workers.models import SystemSettings, WorkerTemplate


class PlacementPreviewForm(forms.Form):
    """Which definition to dry-run placement for (a read: submitted with GET)."""

    definition = forms.ModelChoiceField(
        queryset=LabletDefinition.objects.none(), empty_label="Choose a definition…", label="Definition"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["definition"].queryset = LabletDefinition.objects.exclude(
            status=DefinitionStatus.ARCHIVED
        ).order_by("name", "-created_at")


class QueueListOptions(ListOptions):
    """The scheduler's queue of PENDING sessions: by start (the placement order, default), owner or booking
    time; 20 rows unless asked for more."""

    SORT_KEYS = {"timeslot": "timeslot_start", "owner": "owner", "created": "created_at"}
    LABELS = {"owner": "Owner", "timeslot": "Start", "created": "Booked"}
    DEFAULT_SORT = "timeslot"
    PAGE_SIZES = (20, 50, 100, 200)
    DEFAULT_PAGE_SIZE = 20


# The settings page shows the fields in these groups, in this order.
SETTINGS_GROUPS = (
    ("Idle detection", ("idle_detection_enabled", "idle_timeout_minutes")),
    (
        "Autoscaling",
        (
            "autoscaling_enabled",
            "min_workers_per_region",
            "max_workers_per_region",
            "scale_up_cooldown_minutes",
            "scale_down_cooldown_minutes",
            "drain_timeout_minutes",
            "default_worker_template",
        ),
    ),
    ("Placement and timing", ("placement_lead_minutes", "boot_lead_minutes", "grading_timeout_minutes")),
    ("Sessions", ("max_extension_minutes",)),
    ("Discovery", ("discovery_enabled", "discovery_ami_pattern", "discovery_interval_minutes")),
    ("Evidence", ("evidence_timeout_minutes", "evidence_retention_days")),
)


class SystemSettingsForm(forms.ModelForm):
    """Every admin-editable field of the SystemSettings singleton (SPEC §2.4), grouped as on the page."""

    class Meta:
        model = SystemSettings
        fields = [name for _title, names in SETTINGS_GROUPS for name in names]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["default_worker_template"].queryset = WorkerTemplate.objects.order_by("name")
        for name, field in self.fields.items():
            if isinstance(field, forms.IntegerField):
                field.validators.append(MaxValueValidator(100_000))
                field.widget.attrs["max"] = 100_000
            if name.endswith("_minutes"):
                field.help_text = "minutes"

    def clean(self):
        data = super().clean()
        low, high = data.get("min_workers_per_region"), data.get("max_workers_per_region")
        if low is not None and high is not None and low > high:
            self.add_error("max_workers_per_region", "Must not be lower than the minimum.")
        return data

    def groups(self):
        """`[(title, [bound fields])]` in page order."""
        return [(title, [self[name] for name in names]) for title, names in SETTINGS_GROUPS]
