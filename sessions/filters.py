"""FilterSets shared by the pages and the REST API. Bad filter values never raise: they are form errors."""

import datetime

import django_filters
from django import forms
from django.db.models import Q

from sessions.models import LabletDefinition, LabletSession
from sessions.states import DefinitionStatus, SessionStatus


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


class SessionFilterSet(django_filters.FilterSet):
    """status (comma list), owner, definition, worker, reservation_id, from/to (timeslot overlaps)."""

    status = StatusListFilter(field_name="status", valid=SessionStatus.values)
    owner = django_filters.CharFilter(field_name="owner")
    definition = django_filters.UUIDFilter(field_name="definition_id")
    worker = django_filters.UUIDFilter(field_name="worker_id")
    reservation_id = django_filters.CharFilter(field_name="reservation_id")
    # A session is in [from, to) when its timeslot overlaps it.
    from_ = UtcDateTimeFilter(field_name="timeslot_end", lookup_expr="gt", label="from")
    to = UtcDateTimeFilter(field_name="timeslot_start", lookup_expr="lt")

    class Meta:
        model = LabletSession
        fields = ["status", "owner", "definition", "worker", "reservation_id"]

    def __init__(self, data=None, *args, **kwargs):
        # `from` is a Python keyword: accept it in the query string and map it to the `from_` filter.
        if data is not None and "from" in data:
            data = data.copy()
            data["from_"] = data.get("from")
        super().__init__(data, *args, **kwargs)


class DefinitionFilterSet(django_filters.FilterSet):
    """name (contains), status (comma list)."""

    name = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    status = StatusListFilter(field_name="status", valid=DefinitionStatus.values)
    q = django_filters.CharFilter(method="search", label="search")

    class Meta:
        model = LabletDefinition
        fields = ["name", "status"]

    def search(self, qs, name, value):
        return qs.filter(Q(name__icontains=value) | Q(description__icontains=value))
