"""The sessions app's REST routes, registered on the shared routers by `lcm.api.urls`."""

from sessions.api.exams import ExamViewSet
from sessions.api.internal import InternalSessionViewSet
from sessions.api.views import DefinitionViewSet, SessionViewSet

v1_routes = [
    ("definitions", DefinitionViewSet, "definition"),
    ("sessions", SessionViewSet, "session"),
    ("exams", ExamViewSet, "exam"),
]
internal_routes = [
    ("sessions", InternalSessionViewSet, "internal-session"),
]
