"""FilterSets shared by the pages and the REST API. Bad filter values never raise: they are form errors."""

import django_filters
from django import forms
from django.db.models import Q

from lcm.filters import StatusListFilter, UtcDateTimeFilter
from sessions.models import LabletDefinition, LabletSession
from sessions.states import DefinitionStatus, SessionStatus


class IdFilter(django_filters.NumberFilter):
    """A whole-number id (a bigint): "1.5", "1e309" or "-1" are form errors, not a lookup."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class SessionFilterSet(django_filters.FilterSet):
    """status (comma list), owner, definition, worker, reservation_id, exam, from/to (timeslot overlaps),
    and `q`: a case-insensitive substring of the owner or the reservation id ("bob" finds bob@example.com)."""

    status = StatusListFilter(field_name="status", valid=SessionStatus.values)
    owner = django_filters.CharFilter(field_name="owner")
    q = django_filters.CharFilter(method="search", label="search", max_length=200)
    exam = IdFilter(field_name="exam_id")
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

    def search(self, qs, name, value):
        value = value.strip()
        if not value:
            return qs
        return qs.filter(Q(owner__icontains=value) | Q(reservation_id__icontains=value))


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
