"""Filters every app's FilterSets share (pages and REST API alike): bad values are form errors, never raised."""

import datetime
import re

import django_filters
from django import forms
from django.db.models import Q
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


class SearchFilter(django_filters.CharFilter):
    """`?q=`: a case-insensitive substring of any of `fields` ("bob" finds bob@example.com), or the start of
    any of `uuid_fields` (a session id's first characters). Blank or whitespace searches nothing; an
    overlong value is a form error."""

    def __init__(self, *args, fields=(), uuid_fields=(), **kwargs):
        kwargs.setdefault("label", "search")
        kwargs.setdefault("max_length", SEARCH_MAX_LENGTH)
        super().__init__(*args, **kwargs)
        self.fields = tuple(fields)
        self.uuid_fields = tuple(uuid_fields)

    def filter(self, qs, value):
        value = (value or "").strip()
        if not value:
            return qs
        return qs.filter(search_q(self.fields, value, uuid_fields=self.uuid_fields))


SEARCH_MAX_LENGTH = 200
_UUID_PREFIX = re.compile(r"[0-9a-f]{4}[0-9a-f-]{0,32}")


def search_q(fields, value: str, *, uuid_fields=()) -> Q:
    """`field1 contains value OR field2 contains value …`, case-insensitive; OR `uuid_field starts with value`
    when the value looks like the start of a UUID (4+ hex digits, hyphens as written: PostgreSQL compares the
    hyphenated text)."""
    condition = Q()
    for field in fields:
        condition |= Q(**{f"{field}__icontains": value})
    if uuid_fields and _UUID_PREFIX.fullmatch(value.lower()):
        for field in uuid_fields:
            condition |= Q(**{f"{field}__istartswith": value.lower()})
    return condition
