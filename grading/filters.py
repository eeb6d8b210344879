"""Score report filters shared by the reports page, its CSV export and the REST API."""

import django_filters
from django.db.models import DecimalField, Exists, F, OuterRef
from django.db.models.functions import Cast, NullIf

from grading.models import GradingSession, ScoreReport
from grading.states import GradingStatus
from lcm.filters import SearchFilter, UtcDateTimeFilter
from lcm.pages import ListOptions


class ScoreReportFilterSet(django_filters.FilterSet):
    """definition, owner, passed, from/to (report creation time), `q`: a substring of the owner or the
    definition's name."""

    definition = django_filters.UUIDFilter(field_name="lablet_session__definition_id")
    owner = django_filters.CharFilter(field_name="lablet_session__owner")
    passed = django_filters.BooleanFilter(field_name="passed")
    from_ = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte", label="from")
    to = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")
    q = SearchFilter(fields=("lablet_session__owner", "lablet_session__definition__name"))

    class Meta:
        model = ScoreReport
        fields = ["definition", "owner", "passed"]

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and "from" in data:
            data = data.copy()
            data["from_"] = data.get("from")
        super().__init__(data, *args, **kwargs)


class ReportListOptions(ListOptions):
    """The reports page's sort keys: date (created), score (as a share of the maximum, so reports out of
    different maxima compare), pass (FAIL first ascending); newest first."""

    SORT_KEYS = {"date": "created_at", "score": "score_share", "pass": "passed"}
    LABELS = {"date": "Created", "score": "Score", "pass": "Result"}
    DEFAULT_SORT = "-date"

    def annotate(self, rows):
        if self.key != "score":
            return rows
        share = F("score") / NullIf(F("max_score"), 0)
        return rows.annotate(score_share=Cast(share, DecimalField(max_digits=20, decimal_places=10)))


class FailedGradingFilterSet(django_filters.FilterSet):
    """Gradings that FAULTED and left their session without a score report (SPEC §3.4 "grading failed"): the
    reports page's definition, owner, from/to (when the grading failed) and search filters."""

    definition = django_filters.UUIDFilter(field_name="lablet_session__definition_id")
    owner = django_filters.CharFilter(field_name="lablet_session__owner")
    from_ = UtcDateTimeFilter(field_name="updated_at", lookup_expr="gte", label="from")
    to = UtcDateTimeFilter(field_name="updated_at", lookup_expr="lt")
    q = SearchFilter(fields=("lablet_session__owner", "lablet_session__definition__name"))

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
