"""The grading app's REST routes, registered on the shared router by `lcm.api.urls`."""

from grading.api.evidence import SessionEvidenceViewSet
from grading.api.sessions import InternalSessionGradingViewSet, SessionGradingViewSet
from grading.api.views import ScoreReportViewSet

v1_routes = [
    ("score-reports", ScoreReportViewSet, "score-report"),
    ("sessions", SessionGradingViewSet, "session-grading"),
    ("sessions", SessionEvidenceViewSet, "session-evidence"),
]
internal_routes = [
    ("sessions", InternalSessionGradingViewSet, "internal-session-grading"),
]
