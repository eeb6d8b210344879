"""Score report filters shared by the reports page, its CSV export and the REST API."""

import django_filters

from grading.models import ScoreReport
from lcm.filters import UtcDateTimeFilter


class ScoreReportFilterSet(django_filters.FilterSet):
    """definition, owner, passed, from/to (report creation time)."""

    definition = django_filters.UUIDFilter(field_name="lablet_session__definition_id")
    owner = django_filters.CharFilter(field_name="lablet_session__owner")
    passed = django_filters.BooleanFilter(field_name="passed")
    from_ = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte", label="from")
    to = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = ScoreReport
        fields = ["definition", "owner", "passed"]

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and "from" in data:
            data = data.copy()
            data["from_"] = data.get("from")
        super().__init__(data, *args, **kwargs)
