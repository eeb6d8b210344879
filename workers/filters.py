"""Worker and lab record filters shared by the pages and the REST API."""

import django_filters
from django.db.models import Count

from lcm.filters import SearchFilter, StatusListFilter
from lcm.pages import ListOptions, status_rank
from sessions.states import capacity_holding_q
from workers.models import CMLWorker, LabRecord
from workers.states import LabStatus, WorkerStatus


class WorkerFilterSet(django_filters.FilterSet):
    """status (comma list), region, license_type, template, `q`: a substring of the name, EC2 instance id,
    region, an address or the CML URL."""

    status = StatusListFilter(field_name="status", valid=WorkerStatus.values)
    region = django_filters.CharFilter(field_name="region")
    license_type = django_filters.CharFilter(field_name="license_type", lookup_expr="iexact")
    template = django_filters.CharFilter(field_name="template__name")
    q = SearchFilter(fields=("name", "aws_instance_id", "region", "public_ip", "private_ip", "cml_base_url"))

    class Meta:
        model = CMLWorker
        fields = ["status", "region", "license_type", "template"]


class LabRecordFilterSet(django_filters.FilterSet):
    """worker, status (comma list), definition."""

    worker = django_filters.UUIDFilter(field_name="worker_id")
    status = StatusListFilter(field_name="status", valid=LabStatus.values)
    definition = django_filters.UUIDFilter(field_name="definition_id")

    class Meta:
        model = LabRecord
        fields = ["worker", "status", "definition"]


class WorkerListOptions(ListOptions):
    """The workers page's sort keys (a sort bar over the cards): status in lifecycle order, sessions = the
    sessions holding capacity on the worker."""

    SORT_KEYS = {
        "name": "name",
        "status": "status_rank",
        "region": "region",
        "template": "template__name",
        "sessions": "holding_sessions",
    }
    LABELS = {"name": "Name", "status": "Status", "region": "Region", "template": "Template", "sessions": "Sessions"}
    DEFAULT_SORT = "name"
    TIEBREAK = ("name", "id")

    def annotate(self, rows):
        if self.key == "status":
            return rows.annotate(status_rank=status_rank(WorkerStatus.values))
        if self.key == "sessions":
            return rows.annotate(holding_sessions=Count("sessions", filter=capacity_holding_q("sessions__")))
        return rows
