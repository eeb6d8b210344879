"""Admin for the kernel's models: API tokens (create one, its key shown once in a message; list; revoke),
and, read-only, single sign-on identities, loop heartbeats and received CloudEvents; notification recipients
and webhooks (SPEC §11: URL, secret, enabled, event kinds; a test notification action) and their deliveries
(read-only, retry).

Only the key's hash is stored, so the key cannot be shown again; tokens are never edited,
only revoked (an admin action calling `lcm.api.tokens.token_revoke`).
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model

from lcm.admin_utils import ActionsOnlyAdmin, ReadOnlyAdmin, service_action
from lcm.api.tokens import MAX_EXPIRY_DAYS, token_create, token_revoke
from lcm.models import (
    ApiToken,
    EmailRecipient,
    LoopHeartbeat,
    NotificationDelivery,
    OidcIdentity,
    ReceivedEvent,
    WebhookEndpoint,
)
from lcm.notifications import KINDS, delivery_retry, send_test


class ApiTokenAddForm(forms.ModelForm):
    """A new token: whose, what it is for, and how many days it lasts (empty = no expiry)."""

    expires_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        help_text="Days until the token expires; leave empty for a token without expiry.",
    )

    class Meta:
        model = ApiToken
        fields = ("user", "name")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = get_user_model().objects.filter(is_active=True)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "key_prefix", "created_at", "expires_at", "last_used_at", "revoked")
    list_filter = ("revoked", "created_at", "expires_at")
    search_fields = ("name", "key_prefix", "user__username")
    list_select_related = ("user",)
    readonly_fields = ("user", "name", "key_prefix", "created_at", "expires_at", "last_used_at", "revoked")
    actions = [
        service_action(
            "revoke_tokens",
            "Revoke selected tokens",
            lambda token, request: token_revoke(token, actor=request.user),
            confirm="Every client using them is refused from now on. This cannot be undone.",
        )
    ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "name", "expires_days")
        return self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        # The changelist keeps its revoke action; a token's own page is read-only.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        created = token_create(
            form.cleaned_data["user"],
            actor=request.user,
            name=form.cleaned_data.get("name", ""),
            expires_days=form.cleaned_data.get("expires_days"),
        )
        # The admin goes on with `obj` (log entry, redirect): make it the row the service wrote.
        vars(obj).update(vars(created.token))
        self.message_user(
            request,
            f"New API token for {created.token.user.get_username()}: {created.key} — copy it now, "
            "it is shown only this once.",
            level=messages.WARNING,
        )


@admin.register(OidcIdentity)
class OidcIdentityAdmin(ReadOnlyAdmin):
    """Which provider account each single sign-on user is (written at sign-in by `lcm.oidc`), with its groups
    at the last sign-in. Deactivate the user to refuse them; their role follows the provider's groups."""

    list_display = ("user", "issuer", "subject", "groups", "last_login_at", "created_at")
    search_fields = ("user__username", "subject", "issuer")
    list_select_related = ("user",)


@admin.register(LoopHeartbeat)
class LoopHeartbeatAdmin(ReadOnlyAdmin):
    """When each control loop last ticked (written by the loops, read by the pages and the status API)."""

    list_display = ("name", "last_tick_at", "last_duration_ms", "last_keys", "ticks", "last_error")
    search_fields = ("name",)


@admin.register(ReceivedEvent)
class ReceivedEventAdmin(ReadOnlyAdmin):
    """CloudEvents received by the webhook (kept to acknowledge redeliveries without acting twice)."""

    list_display = ("received_at", "event_type", "event_id", "subject", "outcome")
    list_filter = ("event_type",)
    search_fields = ("event_id", "subject", "source")
    date_hierarchy = "received_at"


class EventKindsField(forms.MultipleChoiceField):
    """The event kinds a destination subscribes to (none ticked: all of them), from what the apps announce."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs):
        super().__init__(
            choices=lambda: [(kind, f"{kind}: {text}") for kind, text in sorted(KINDS.items())],
            required=False,
            help_text="Leave all unticked to receive every kind.",
            **kwargs,
        )


class EmailRecipientForm(forms.ModelForm):
    event_kinds = EventKindsField()

    class Meta:
        model = EmailRecipient
        fields = ("email", "name", "enabled", "event_kinds")


class WebhookEndpointForm(forms.ModelForm):
    """The secret is write-only: never shown again; left empty on a change, the stored one is kept."""

    event_kinds = EventKindsField()
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        min_length=16,
        max_length=200,
        help_text="Shared secret for the X-LCM-Signature HMAC-SHA256 header (at least 16 characters). "
        "Leave empty to keep the current one.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("name", "url", "secret", "enabled", "event_kinds")

    def clean_secret(self):
        secret = self.cleaned_data.get("secret") or ""
        if not secret:
            if not self.instance.pk:
                raise forms.ValidationError("A new webhook needs a secret.")
            return self.instance.secret
        return secret


_SEND_TEST = service_action("send_test", "Send a test notification", lambda row, request: send_test(row))


@admin.register(EmailRecipient)
class EmailRecipientAdmin(admin.ModelAdmin):
    """Who is emailed (SPEC §11): Django's email backend, `EMAIL_*` settings."""

    form = EmailRecipientForm
    list_display = ("email", "name", "enabled", "event_kinds", "created_at")
    list_filter = ("enabled",)
    search_fields = ("email", "name")
    actions = [_SEND_TEST]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Outbound CloudEvents webhooks (SPEC §11), signed with their secret (`lcm.notifications`)."""

    form = WebhookEndpointForm
    list_display = ("name", "url", "enabled", "event_kinds", "created_at")
    list_filter = ("enabled",)
    search_fields = ("name", "url")
    actions = [_SEND_TEST]


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(ActionsOnlyAdmin):
    """Every notification sent or being retried; FAILED ones can be retried."""

    list_display = ("created_at", "event_type", "channel", "target", "status", "attempts", "delivered_at", "last_error")
    list_filter = ("status", "channel", "event_type")
    search_fields = ("event_id", "target", "subject")
    date_hierarchy = "created_at"
    actions = [service_action("retry_now", "Retry now", lambda row, request: delivery_retry(row))]

    def has_add_permission(self, request, obj=None):
        return False
