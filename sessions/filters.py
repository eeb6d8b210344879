"""FilterSets shared by the pages and the REST API. Bad filter values never raise: they are form errors."""

import django_filters
from django import forms
from django.db.models import CharField, Count, F, Func

from lcm.filters import SearchFilter, StatusListFilter, UtcDateTimeFilter
from lcm.pages import ListOptions, status_rank
from sessions.models import Exam, LabletDefinition, LabletSession
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
    and `q`: a case-insensitive substring of the owner or the reservation id ("bob" finds bob@example.com), or
    the start of the session id."""

    status = StatusListFilter(field_name="status", valid=SessionStatus.values)
    owner = django_filters.CharFilter(field_name="owner")
    q = SearchFilter(fields=("owner", "reservation_id"), uuid_fields=("id",))
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


class SessionSearchFilterSet(django_filters.FilterSet):
    """Only `q` (owner or reservation id): for a list of sessions whose page has other parameters of its own
    (the scheduler's queue beside its placement preview)."""

    q = SearchFilter(fields=("owner", "reservation_id"), uuid_fields=("id",))

    class Meta:
        model = LabletSession
        fields = []


class DefinitionFilterSet(django_filters.FilterSet):
    """name (contains), status (comma list), `q`: a substring of the name, version, form-qualified name or
    description."""

    name = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    status = StatusListFilter(field_name="status", valid=DefinitionStatus.values)
    q = SearchFilter(fields=("name", "version", "form_qualified_name", "description"))

    class Meta:
        model = LabletDefinition
        fields = ["name", "status"]


class VersionKey(Func):
    """A version string as numbers (`lcm.versions.version_key` in SQL), so 2.10 sorts after 2.9: on PostgreSQL
    the digit runs before any `-suffix` as a numeric array; elsewhere the text itself."""

    output_field = CharField()

    def __init__(self, field: str):
        super().__init__(F(field))

    def as_sql(self, compiler, connection, **extra):
        return compiler.compile(self.source_expressions[0])

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"array_remove(regexp_split_to_array(split_part({sql}, '-', 1), '[^0-9]+'), '')::numeric[]", params


class DefinitionListOptions(ListOptions):
    """The definitions page's sort keys; status in lifecycle order, version numerically."""

    SORT_KEYS = {"name": "name", "version": "version_key", "status": "status_rank", "created": "created_at"}
    LABELS = {"name": "Name", "version": "Version", "status": "Status", "created": "Created"}
    DEFAULT_SORT = "name"

    def annotate(self, rows):
        if self.key == "status":
            return rows.annotate(status_rank=status_rank(DefinitionStatus.values))
        if self.key == "version":
            return rows.annotate(version_key=VersionKey("version"))
        return rows


class ExamFilterSet(django_filters.FilterSet):
    """`q`: a substring of the exam's name or notes."""

    q = SearchFilter(fields=("name", "notes"))

    class Meta:
        model = Exam
        fields = []


class ExamListOptions(ListOptions):
    """The exams page's sort keys: name, timeslot start, size (the roster's sessions); newest first."""

    SORT_KEYS = {"name": "name", "start": "timeslot_start", "size": "size"}
    LABELS = {"name": "Exam", "start": "Timeslot", "size": "Candidates"}
    DEFAULT_SORT = "-start"
    TIEBREAK = ("id",)

    def annotate(self, rows):
        return rows.annotate(size=Count("sessions")) if self.key == "size" else rows
