"""Worker and lab record filters shared by the pages and the REST API."""

import django_filters

from lcm.filters import StatusListFilter
from workers.models import CMLWorker, LabRecord
from workers.states import LabStatus, WorkerStatus


class WorkerFilterSet(django_filters.FilterSet):
    """status (comma list), region, license_type, template."""

    status = StatusListFilter(field_name="status", valid=WorkerStatus.values)
    region = django_filters.CharFilter(field_name="region")
    license_type = django_filters.CharFilter(field_name="license_type", lookup_expr="iexact")
    template = django_filters.CharFilter(field_name="template__name")

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
