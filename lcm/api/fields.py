"""Serializer fields shared by every app's API: strict times, case-insensitive statuses, storable JSON."""

from datetime import UTC, datetime

from django.core.validators import URLValidator
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


def iso_utc(value: datetime | None) -> str | None:
    """A date-time as DRF renders it (ISO 8601 in UTC, `Z` for +00:00), or None."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time that must carry its offset (SPEC §2: times are timezone-aware); returned in UTC."""

    default_error_messages = {
        "invalid": "is not an ISO 8601 date-time (e.g. 2026-01-01T09:00:00Z)",
        "naive": "must include a timezone (e.g. 2026-01-01T09:00:00Z)",
        "range": "is out of the supported date range",
    }

    def to_internal_value(self, value):
        if isinstance(value, str):
            try:
                value = parse_datetime(value.strip())
            except ValueError:  # well-formed but impossible, e.g. February 30
                value = None
        if not isinstance(value, datetime):
            self.fail("invalid")
        if timezone.is_naive(value):
            self.fail("naive")
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError):
            self.fail("range")


class UpperChoiceField(serializers.ChoiceField):
    """A status or other enum accepted in any case (`running` → `RUNNING`), documented by its UPPER_CASE values."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = data.strip().upper()
        return super().to_internal_value(data)


def _storable(value, path="") -> str | None:
    """The first place in a JSON value PostgreSQL cannot store (a NUL or an unpaired surrogate), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return path or "value"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "value"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            bad = _storable(str(key), where) or _storable(item, where)
            if bad:
                return bad
    if isinstance(value, list):
        for index, item in enumerate(value):
            bad = _storable(item, f"{path}[{index}]")
            if bad:
                return bad
    return None


def validate_storable_json(value):
    """Reject JSON text PostgreSQL's JSONB cannot hold (NUL characters, unpaired surrogates)."""
    bad = _storable(value)
    if bad:
        raise serializers.ValidationError(f"contains characters that cannot be stored (at {bad})")
    return value


@extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
class PortMapField(serializers.JSONField):
    """`{port name: number}` as stored on sessions and labs."""


class HttpURLField(serializers.URLField):
    """A URL a browser is sent to: http or https only (`javascript:`, `data:`, `ftp:` are refused)."""

    default_error_messages = {"invalid": "must be an http(s) URL"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, URLValidator)]
        self.validators.append(URLValidator(schemes=["http", "https"], message=self.error_messages["invalid"]))


class BlankAsNullURLField(serializers.URLField):
    """A stored URL that may be blank: `""` is output as `null` (an empty string is not a URI)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return value or None
