"""Filters every app's FilterSets share (pages and REST API alike): bad values are form errors, never raised."""

import datetime

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField


class CommaSeparatedStatusField(forms.CharField):
    """`RUNNING,ready` → ["RUNNING", "READY"]; unknown names are a validation error naming them."""

    def __init__(self, *args, choices=(), **kwargs):
        self.valid = set(choices)
        super().__init__(*args, **kwargs)

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return []
        statuses = [part.strip().upper() for part in str(value).split(",") if part.strip()]
        unknown = [s for s in statuses if s not in self.valid]
        if unknown:
            # Parameters, not an f-string: the user's text may hold a "%".
            raise forms.ValidationError(
                "unknown status %(unknown)s; expected any of %(valid)s",
                params={"unknown": ", ".join(unknown), "valid": ", ".join(sorted(self.valid))},
            )
        return statuses


class StatusListFilter(django_filters.Filter):
    field_class = CommaSeparatedStatusField

    def __init__(self, *args, valid=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.extra["choices"] = valid

    def filter(self, qs, value):
        return qs.filter(**{f"{self.field_name}__in": value}) if value else qs


class UtcIsoDateTimeField(IsoDateTimeField):
    """ISO 8601 date-time, normalised to UTC: Python accepts offsets (e.g. -20:53) PostgreSQL refuses.

    A time that has no UTC equivalent (9999-12-31T23:00-05:00 is past `datetime.max`) is a form error.
    """

    def to_python(self, value):
        value = super().to_python(value)
        if value is None or value.tzinfo is None:
            return value
        try:
            return value.astimezone(datetime.UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("is out of the supported date range", code="range") from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date-time filter whose value is in UTC (see `UtcIsoDateTimeField`)."""

    field_class = UtcIsoDateTimeField
