"""Kernel models: API tokens (SPEC §5.1 auth; written by `lcm.api.tokens` only), single sign-on identities
(SPEC §12; written by `lcm.oidc` only), loop heartbeats (written by `lcm.loops`), received CloudEvents (written
by `lcm.webhooks`), the shape every status history table shares (`StatusChange`; its rows are written by
`lcm.fsm.record_changes` only) and the notification recipients, webhooks and deliveries (configured in the
admin, delivered by `lcm.notifications`)."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """A per-user API key for `Authorization: Token <key>` / `Bearer <key>`.

    Only the SHA-256 of the key is stored: the key itself is shown once, when it is created,
    and cannot be recovered. `key_prefix` (the first characters of the key) lets a person
    tell tokens apart in lists without revealing them. A token stops working when it is
    revoked, when it expires or when its user is deactivated.
    """

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    key_prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        db_table = "api_tokens"
        ordering = ["-created_at"]
        verbose_name = "API token"
        verbose_name_plural = "API tokens"

    def __str__(self):
        return f"{self.name or 'token'} ({self.key_prefix}…) for {self.user.get_username()}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        """Neither revoked nor expired (the user's own state is checked at authentication)."""
        return not self.revoked and not self.is_expired


class OidcIdentity(models.Model):
    """The identity provider's account (issuer + `sub`) a local user signs in as through single sign-on.

    Users made by single sign-on have no usable password; their roles are set from the provider's groups at
    every sign-in. A local account with the same username or e-mail is never taken over: the match is by
    (issuer, subject) only.
    """

    id = models.BigAutoField(primary_key=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identity")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    groups = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "oidc_identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_unique_subject")]
        verbose_name = "single sign-on identity"
        verbose_name_plural = "single sign-on identities"

    def __str__(self):
        return f"{self.subject} at {self.issuer}"


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


class ReceivedEvent(models.Model):
    """A CloudEvent already handled, kept so a redelivery is acknowledged without acting twice (SPEC §5.2)."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=200, unique=True)
    event_type = models.CharField(max_length=200)
    source = models.CharField(max_length=500, blank=True, default="")
    subject = models.CharField(max_length=200, blank=True, default="")
    outcome = models.CharField(max_length=200, blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "received_events"
        ordering = ["-received_at"]

    def __str__(self):
        return f"{self.event_type} {self.event_id}"


def status_change_columns() -> dict:
    """The columns every status history table has after its own key and subject: spliced into the
    model's body with `locals().update(...)` (as `transitions_from_table` is), so that each table keeps
    its columns in declaration order (an abstract model's fields would come first)."""
    return {
        "from_status": models.CharField(max_length=20, blank=True, default=""),
        "to_status": models.CharField(max_length=20),
        "at": models.DateTimeField(auto_now_add=True, db_index=True),
        "actor": models.CharField(max_length=150),
        "reason": models.TextField(blank=True, default=""),
        "request_id": models.CharField(max_length=128, blank=True, default=""),
    }


class StatusChange(models.Model):
    """A status history table: one row per status change of its subject (`subject_field` names what
    changed), written by `lcm.fsm.record_changes` in the same transaction as the change."""

    subject_field = "entity"

    class Meta:
        abstract = True
        ordering = ["at", "id"]

    def __str__(self):
        subject = getattr(self, self.subject_field)
        return f"{subject} {self.from_status or '∅'} → {self.to_status} by {self.actor}"

    @classmethod
    def entity_of(cls, change: dict) -> str:
        """What a change (a `record_changes` dict) is about, as the metrics and announcements name it:
        its `subject_field` value (`session`, `user_session`, ...) unless the table says otherwise."""
        return str(change.get(cls.subject_field) or cls._meta.get_field(cls.subject_field).default)


# --- Notifications (SPEC §11): who is told, and each delivery (written by `lcm.notifications` only) ---------


class NotificationChannel(models.TextChoices):
    EMAIL = "email"
    WEBHOOK = "webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class EmailRecipient(models.Model):
    """An address told of the event kinds it subscribes to (all of them when `event_kinds` is empty)."""

    id = models.BigAutoField(primary_key=True)
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=100, blank=True, default="")
    enabled = models.BooleanField(default=True)
    event_kinds = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "notification_recipients"
        ordering = ["email"]
        verbose_name = "notification email recipient"

    def __str__(self):
        return f"{self.name} <{self.email}>" if self.name else self.email


class WebhookEndpoint(models.Model):
    """An outbound webhook: LCM POSTs each subscribed event to `url` as a CloudEvent, signed with `secret`
    (HMAC-SHA256, header `X-LCM-Signature`; see `lcm.notifications.signature`)."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    event_kinds = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "notification_webhooks"
        ordering = ["name"]
        verbose_name = "notification webhook"

    def __str__(self):
        return f"{self.name} ({self.url})"


class NotificationDelivery(models.Model):
    """One event for one destination: delivered once, retried with backoff until it is or the attempts run out.

    `event_id` is derived from what happened (a session's end, one worker failure), so announcing the
    same thing twice never delivers it twice (unique per destination)."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=64, db_index=True)
    event_type = models.CharField(max_length=200)
    subject = models.CharField(max_length=200, blank=True, default="")
    channel = models.CharField(max_length=10, choices=NotificationChannel.choices)
    recipient = models.ForeignKey(EmailRecipient, null=True, blank=True, on_delete=models.CASCADE)
    webhook = models.ForeignKey(WebhookEndpoint, null=True, blank=True, on_delete=models.CASCADE)
    target = models.CharField(max_length=500)
    event = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "notification_deliveries"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "notification deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event_id", "channel", "target"], name="uniq_delivery_per_destination")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self):
        return f"{self.event_type} → {self.target} ({self.status})"


class LiveStamp(models.Model):
    """A change counter per live-page scope (`global`, `session:<id>`, `exam:<id>`), bumped by `lcm.live`
    after each committed change, so an unchanged page poll is answered without rendering (SPEC §5.3)."""

    scope = models.CharField(max_length=100, primary_key=True)
    version = models.BigIntegerField(default=0)

    class Meta:
        db_table = "live_stamps"

    def __str__(self):
        return f"{self.scope} v{self.version}"


class AttentionNotice(models.Model):
    """A needs-attention item (SPEC §11) already announced: its kind, its object and since when it has stood,
    so the `attention` loop tells the recipients of each episode once (`scheduling.attention_notices`)."""

    kind = models.CharField(max_length=40)
    object_key = models.CharField(max_length=120)  # "<type>:<id>", as the attention item names its object
    since = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "attention_notices"
        constraints = [
            models.UniqueConstraint(fields=["kind", "object_key", "since"], name="attention_notice_once"),
            models.UniqueConstraint(
                fields=["kind", "object_key"], condition=models.Q(since__isnull=True), name="attention_notice_once_null"
            ),
        ]

    def __str__(self):
        return f"{self.kind} {self.object_key} since {self.since}"
