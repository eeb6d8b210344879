"""Kernel models: API tokens (SPEC §5.1 auth). Tokens are written by `lcm.api.tokens` only."""

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
