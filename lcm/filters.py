"""Filters every app's FilterSets share (pages and REST API alike): bad values are form errors, never raised."""

import datetime

import django_filters
from django import forms


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


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601 date-time, normalised to UTC: Python accepts offsets (e.g. -20:53) PostgreSQL refuses."""

    def filter(self, qs, value):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(datetime.UTC)
        return super().filter(qs, value)
