"""Score report filters shared by the reports page, its CSV export and the REST API."""

import django_filters
from django.db.models import Exists, OuterRef

from grading.models import GradingSession, ScoreReport
from grading.states import GradingStatus
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


class FailedGradingFilterSet(django_filters.FilterSet):
    """Gradings that FAULTED and left their session without a score report (SPEC §3.4 "grading failed"): the
    reports page's definition, owner and from/to (when the grading failed) filters."""

    definition = django_filters.UUIDFilter(field_name="lablet_session__definition_id")
    owner = django_filters.CharFilter(field_name="lablet_session__owner")
    from_ = UtcDateTimeFilter(field_name="updated_at", lookup_expr="gte", label="from")
    to = UtcDateTimeFilter(field_name="updated_at", lookup_expr="lt")

    class Meta:
        model = GradingSession
        fields = ["definition", "owner"]

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and "from" in data:
            data = data.copy()
            data["from_"] = data.get("from")
        super().__init__(data, *args, **kwargs)


def failed_gradings():
    """FAULTED gradings whose session has no score report, newest first."""
    scored = ScoreReport.objects.filter(lablet_session=OuterRef("lablet_session"))
    return (
        GradingSession.objects.filter(status=GradingStatus.FAULTED)
        .filter(~Exists(scored))
        .select_related("lablet_session__definition")
        .order_by("-updated_at", "-id")
    )
