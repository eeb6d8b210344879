"""Worker templates, CML workers (+ history), lab records and the port table (SPEC §2.4)."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField

from lcm.fsm import transitions_from_table
from lcm.models import StatusChange, status_change_columns
from workers.states import (
    LAB_TRANSITIONS,
    WORKER_TRANSITIONS,
    DesiredStatus,
    LabStatus,
    LicenseStatus,
    LicenseType,
    ScaleAction,
    WorkerStatus,
)


class WorkerTemplate(models.Model):
    """How to launch a CML worker: EC2 instance type, AMI, region, licence and capacity.

    Seeded from `workers/templates.yaml` on `migrate` (create-only), overwritten by
    `manage.py templates_sync`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    instance_type = models.CharField(max_length=50)
    ami_name_pattern = models.CharField(max_length=200)
    region = models.CharField(max_length=50, default="us-east-1")
    license_type = models.CharField(max_length=20, choices=LicenseType.choices, default=LicenseType.ENTERPRISE)
    cpu_cores = models.PositiveIntegerField()
    memory_gb = models.PositiveIntegerField()
    storage_gb = models.PositiveIntegerField()
    max_nodes = models.PositiveIntegerField()
    port_range_start = models.PositiveIntegerField(default=2000)
    port_range_end = models.PositiveIntegerField(default=9999)
    startup_minutes = models.PositiveIntegerField(default=10)
    cost_per_hour = models.DecimalField(max_digits=8, decimal_places=4, default=0)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "worker_templates"
        ordering = ["cost_per_hour", "name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(port_range_end__gte=models.F("port_range_start")), name="template_port_range"
            )
        ]

    def __str__(self):
        return self.name


class CMLWorker(ConcurrentTransitionMixin, models.Model):
    """One EC2 machine running CML. `desired_status` is what admins ask for; `status` is what is."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    template = models.ForeignKey(
        WorkerTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="workers"
    )
    region = models.CharField(max_length=50, default="us-east-1")
    aws_instance_id = models.CharField(max_length=50, null=True, blank=True, unique=True)
    instance_type = models.CharField(max_length=50, blank=True, default="")
    ami_id = models.CharField(max_length=50, blank=True, default="")
    public_ip = models.GenericIPAddressField(null=True, blank=True)
    private_ip = models.GenericIPAddressField(null=True, blank=True)
    cml_base_url = models.URLField(max_length=500, blank=True, default="")
    cml_version = models.CharField(max_length=20, blank=True, default="")
    license_type = models.CharField(max_length=20, choices=LicenseType.choices, default=LicenseType.ENTERPRISE)
    license_status = models.CharField(max_length=20, choices=LicenseStatus.choices, default=LicenseStatus.UNREGISTERED)
    license_error = models.TextField(blank=True, default="")
    cpu_cores = models.PositiveIntegerField(default=0)
    memory_gb = models.PositiveIntegerField(default=0)
    storage_gb = models.PositiveIntegerField(default=0)
    max_nodes = models.PositiveIntegerField(default=0)
    port_range_start = models.PositiveIntegerField(default=2000)
    port_range_end = models.PositiveIntegerField(default=9999)
    status = FSMField(default=WorkerStatus.PENDING, choices=WorkerStatus.choices, protected=True, db_index=True)
    desired_status = models.CharField(max_length=20, choices=DesiredStatus.choices, default=DesiredStatus.RUNNING)
    service_status = models.CharField(max_length=20, blank=True, default="UNKNOWN")
    cpu_percent = models.FloatField(null=True, blank=True)
    memory_percent = models.FloatField(null=True, blank=True)
    running_nodes = models.PositiveIntegerField(null=True, blank=True)
    metrics_collected_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    idle_detection_enabled = models.BooleanField(default=True)
    drain_started_at = models.DateTimeField(null=True, blank=True)
    drain_deadline = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    locals().update(transitions_from_table(status, WORKER_TRANSITIONS))

    class Meta:
        db_table = "cml_workers"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(port_range_end__gte=models.F("port_range_start")), name="worker_port_range"
            )
        ]

    def __str__(self):
        return f"{self.name} [{self.status}]"

    @property
    def port_range_size(self) -> int:
        """How many ports the worker offers to labs."""
        return self.port_range_end - self.port_range_start + 1


class WorkerStatusChange(StatusChange):
    """One row per change of a worker's `status`, `desired_status` or `license_status`, in the same transaction."""

    id = models.BigAutoField(primary_key=True)
    worker = models.ForeignKey(CMLWorker, on_delete=models.CASCADE, related_name="history")
    field = models.CharField(max_length=20, default="status")
    locals().update(status_change_columns())

    subject_field = "field"
    # The entity a change of each field is announced as (`lcm.events`), and counted as in the metrics.
    ENTITIES = {"status": "worker", "desired_status": "worker.desired", "license_status": "worker.license"}

    class Meta(StatusChange.Meta):
        db_table = "cml_worker_status_changes"

    @classmethod
    def entity_of(cls, change: dict) -> str:
        field = change.get("field") or "status"
        return cls.ENTITIES.get(field, f"worker.{field}")


class LabRecord(ConcurrentTransitionMixin, models.Model):
    """One CML lab on one worker. Owns its ports; at most one active session uses it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    worker = models.ForeignKey(CMLWorker, on_delete=models.PROTECT, related_name="lab_records")
    cml_lab_id = models.CharField(max_length=100, blank=True, default="")
    title = models.CharField(max_length=300, blank=True, default="")
    definition = models.ForeignKey(
        "lablets.LabletDefinition", null=True, blank=True, on_delete=models.SET_NULL, related_name="lab_records"
    )
    status = FSMField(default=LabStatus.IMPORTING, choices=LabStatus.choices, protected=True, db_index=True)
    cml_state = models.CharField(max_length=30, blank=True, default="")
    node_count = models.PositiveIntegerField(default=0)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # When an import of this record was last sent to CML: only then can an import whose answer was lost
    # be in CML under the record's title (so only then is CML searched for it).
    import_sent_at = models.DateTimeField(null=True, blank=True)
    active_session = models.OneToOneField(
        "lablets.LabletSession", null=True, blank=True, on_delete=models.SET_NULL, related_name="active_lab"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    locals().update(transitions_from_table(status, LAB_TRANSITIONS))

    class Meta:
        db_table = "lab_records"
        ordering = ["worker", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["worker", "cml_lab_id"], condition=~models.Q(cml_lab_id=""), name="uniq_worker_cml_lab"
            )
        ]

    def __str__(self):
        return f"{self.title or self.cml_lab_id or self.id} on {self.worker_id} [{self.status}]"

    @property
    def ports(self) -> dict[str, int]:
        """`{port name: number}` of the ports this lab holds."""
        return {p.name: p.port for p in self.port_allocations.all()}


class Port(models.Model):
    """One allocated port on one worker, held by one lab. (worker, port) is unique in the DB."""

    id = models.BigAutoField(primary_key=True)
    worker = models.ForeignKey(CMLWorker, on_delete=models.CASCADE, related_name="ports")
    port = models.PositiveIntegerField()
    lab_record = models.ForeignKey(LabRecord, on_delete=models.CASCADE, related_name="port_allocations")
    name = models.CharField(max_length=200)
    allocated_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "worker_ports"
        ordering = ["worker", "port"]
        constraints = [
            models.UniqueConstraint(fields=["worker", "port"], name="uniq_worker_port"),
            models.UniqueConstraint(fields=["lab_record", "name"], name="uniq_lab_port_name"),
        ]

    def __str__(self):
        return f"{self.name}={self.port}"


class ScaleDecision(models.Model):
    """One decision of the autoscaler or of fleet discovery, with its reason (SPEC §3.6: every decision
    logged with its reason). Shown, read-only and filterable by action and region, in the Django admin
    (Workers › Scale decisions). Written by `workers.autoscaling`, `workers.discovery` and the worker
    reconciler (VANISHED); never edited."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=20, choices=ScaleAction.choices, db_index=True)
    region = models.CharField(max_length=50, blank=True, default="")
    template = models.ForeignKey(WorkerTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    worker = models.ForeignKey(
        CMLWorker, null=True, blank=True, on_delete=models.SET_NULL, related_name="scale_decisions"
    )
    sessions = models.JSONField(default=list, blank=True)  # ids of the sessions behind the decision
    reason = models.TextField()
    actor = models.CharField(max_length=150, default="autoscaler")

    class Meta:
        db_table = "scale_decisions"
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.action} {self.at:%Y-%m-%d %H:%M:%S}: {self.reason[:80]}"


class LicenseAction(models.TextChoices):
    REGISTER = "REGISTER"
    DEREGISTER = "DEREGISTER"


class LicenseRequest(models.Model):
    """An admin's licence registration or deregistration of one worker: an asynchronous intent that the
    worker reconciler carries out against CML, recording the outcome here and on the worker.

    The registration token is kept only until CML has accepted it, then blanked; it is never logged,
    shown or written to history.
    """

    id = models.BigAutoField(primary_key=True)
    worker = models.ForeignKey(CMLWorker, on_delete=models.CASCADE, related_name="license_requests")
    action = models.CharField(max_length=20, choices=LicenseAction.choices)
    token = models.CharField(max_length=256, blank=True, default="")
    requested_by = models.CharField(max_length=150, blank=True, default="")
    requested_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "worker_license_requests"
        ordering = ["-requested_at", "-id"]

    def __str__(self):
        return f"{self.action} of {self.worker_id} [{self.outcome or 'open'}]"


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


def default_max_extension_minutes() -> int:
    """`LCM_MAX_EXTENSION_MINUTES`: how far past a definition's maximum an instructor may extend a session."""
    return settings.LCM_MAX_EXTENSION_MINUTES


def default_pass_percent() -> int:
    """`LCM_GRADING_CUT_PERCENT`: the pass mark when neither the Grading Engine nor the definition gives one."""
    return round(settings.LCM_GRADING_CUT_PERCENT)


def default_admission() -> str:
    """`LCM_ADMISSION`: what booking does when the capacity check finds the fleet cannot hold it (refuse, warn, off)."""
    return settings.LCM_ADMISSION


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
    pass_percent = models.PositiveSmallIntegerField(
        default=default_pass_percent,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="The pass mark (% of the maximum score) when neither the Grading Engine nor the definition sets one.",
    )
    max_extension_minutes = models.PositiveIntegerField(
        default=default_max_extension_minutes,
        help_text="How many minutes past the definition's maximum duration an instructor may extend a session "
        "(admins may go beyond, with a reason).",
    )
    admission = models.CharField(
        max_length=10,
        choices=[("refuse", "Refuse"), ("warn", "Warn"), ("off", "Off")],
        default=default_admission,
        help_text="What booking does when the capacity check (SPEC §10) finds the fleet cannot hold it: "
        "refuse it, book it and warn, or skip the check.",
    )
    evidence_timeout_minutes = models.PositiveIntegerField(
        default=10,
        help_text="How long teardown waits for a lab's evidence (SPEC §9) before it goes on without it.",
    )
    evidence_retention_days = models.PositiveIntegerField(
        default=365, help_text="How long evidence is kept in object storage before the retention loop deletes it."
    )
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


class FleetSample(models.Model):
    """The fleet's capacity and what sessions held of it at one moment: the dashboard's utilisation chart
    (SPEC §11). Written by the `fleet_samples` loop (`scheduling.fleet_samples`), kept `LCM_FLEET_SAMPLE_DAYS`."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(db_index=True)
    workers = models.PositiveIntegerField(default=0)
    cpu_used = models.PositiveIntegerField(default=0)
    cpu_total = models.PositiveIntegerField(default=0)
    memory_used = models.PositiveIntegerField(default=0)
    memory_total = models.PositiveIntegerField(default=0)
    storage_used = models.PositiveIntegerField(default=0)
    storage_total = models.PositiveIntegerField(default=0)
    nodes_used = models.PositiveIntegerField(default=0)
    nodes_total = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "fleet_samples"
        ordering = ["at"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} cpu {self.cpu_used}/{self.cpu_total}"

    def utilisation(self, resource: str = "cpu") -> float:
        """Share of `resource` held by sessions (0 without capacity)."""
        total = getattr(self, f"{resource}_total")
        return getattr(self, f"{resource}_used") / total if total else 0.0
