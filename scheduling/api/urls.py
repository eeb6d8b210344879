"""The scheduling app's REST routes, registered on the shared router by `lcm.api.urls`."""

from scheduling.api.views import CapacityViewSet, SchedulingViewSet

v1_routes = [
    ("scheduling", SchedulingViewSet, "scheduling"),
    ("capacity", CapacityViewSet, "capacity"),
]
