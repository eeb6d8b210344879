"""The grading app's REST routes, registered on the shared router by `lcm.api.urls`."""

from grading.api.views import ScoreReportViewSet

v1_routes = [
    ("score-reports", ScoreReportViewSet, "score-report"),
]
