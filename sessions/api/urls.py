"""The sessions app's REST routes, registered on the shared routers by `lcm.api.urls`."""

from sessions.api.internal import InternalSessionViewSet
from sessions.api.views import DefinitionViewSet, SessionViewSet

v1_routes = [
    ("definitions", DefinitionViewSet, "definition"),
    ("sessions", SessionViewSet, "session"),
]
internal_routes = [
    ("sessions", InternalSessionViewSet, "internal-session"),
]
