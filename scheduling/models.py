"""SystemSettings: the singleton admins edit to steer placement, autoscaling, idle detection and discovery."""

from django.conf import settings
from django.db import models


# A new SystemSettings row takes its placement and timing policy from the environment
# (SPEC §7 "lead times"); admins change it on the row afterwards. Named functions, so a
# migration can refer to them.
def default_placement_lead_minutes() -> int:
    """`LCM_PLACEMENT_LEAD_MINUTES`: how far ahead of its timeslot a PENDING session is placed."""
    return settings.LCM_PLACEMENT_LEAD_MINUTES


def default_boot_lead_minutes() -> int:
    """`LCM_BOOT_LEAD_MINUTES`: how long before its timeslot a session's lab starts (unless its definition says)."""
    return settings.LCM_BOOT_LEAD_MINUTES


def default_grading_timeout_minutes() -> int:
    """`LCM_GRADING_TIMEOUT_MINUTES`: how long collecting and grading may take before the session is expired."""
    return settings.LCM_GRADING_TIMEOUT_MINUTES


class SystemSettings(models.Model):
    """Deployment-wide policy (SPEC §2.4). Exactly one row (pk=1); read it with `SystemSettings.load()`."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    idle_detection_enabled = models.BooleanField(default=True)
    idle_timeout_minutes = models.PositiveIntegerField(default=30)
    autoscaling_enabled = models.BooleanField(default=False)
    min_workers_per_region = models.PositiveIntegerField(default=0)
    max_workers_per_region = models.PositiveIntegerField(default=10)
    scale_up_cooldown_minutes = models.PositiveIntegerField(default=5)
    scale_down_cooldown_minutes = models.PositiveIntegerField(default=15)
    drain_timeout_minutes = models.PositiveIntegerField(default=60)
    placement_lead_minutes = models.PositiveIntegerField(default=default_placement_lead_minutes)
    boot_lead_minutes = models.PositiveIntegerField(default=default_boot_lead_minutes)
    grading_timeout_minutes = models.PositiveIntegerField(default=default_grading_timeout_minutes)
    discovery_enabled = models.BooleanField(default=True)
    discovery_ami_pattern = models.CharField(max_length=200, blank=True, default="cml-2.9*")
    discovery_interval_minutes = models.PositiveIntegerField(default=10)
    default_worker_template = models.ForeignKey(
        "workers.WorkerTemplate", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.CharField(max_length=150, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "system_settings"
        verbose_name = "system settings"
        verbose_name_plural = "system settings"

    def __str__(self):
        return "System settings"

    @classmethod
    def load(cls) -> "SystemSettings":
        """The singleton, created with defaults on first use."""
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


class LoopHeartbeat(models.Model):
    """The last tick of each control loop, written by whichever process ticked it (beat or the embedded
    runner), so every web process can show loop freshness (SPEC §5.4 scheduler page, /api/v1/status/)."""

    name = models.CharField(max_length=50, primary_key=True)
    last_tick_at = models.DateTimeField()
    last_duration_ms = models.FloatField(default=0)
    last_keys = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    ticks = models.PositiveBigIntegerField(default=0)

    class Meta:
        db_table = "loop_heartbeats"
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} @ {self.last_tick_at:%H:%M:%S}"
