"""The workers app's REST routes, registered on the shared router by `lcm.api.urls`."""

from workers.api.views import LabRecordViewSet, WorkerTemplateViewSet, WorkerViewSet

v1_routes = [
    ("workers", WorkerViewSet, "worker"),
    ("worker-templates", WorkerTemplateViewSet, "worker-template"),
    ("lab-records", LabRecordViewSet, "lab-record"),
]
