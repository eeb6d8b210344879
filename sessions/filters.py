"""FilterSets shared by the pages and the REST API. Bad filter values never raise: they are form errors."""

import django_filters
from django.db.models import Q

from lcm.filters import StatusListFilter, UtcDateTimeFilter
from sessions.models import LabletDefinition, LabletSession
from sessions.states import DefinitionStatus, SessionStatus


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
