"""REST routes (SPEC §5.1), mounted at `/api/`: the public `v1/`, the `internal/` API, the schema and its docs.

Each app's `api/urls.py` lists its ViewSets; they are registered here on one router per
surface so that every route shares the same conventions (see `lcm.api.schema.ApiRouter`).
The webhook (`/api/events`) is routed by `lcm.urls` itself.
"""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from grading.api.urls import internal_routes as grading_internal
from grading.api.urls import v1_routes as grading_v1
from lcm.api.schema import ApiRouter
from scheduling.api.attention import AttentionView
from scheduling.api.status import StatusView
from scheduling.api.urls import v1_routes as scheduling_v1
from sessions.api.urls import internal_routes as sessions_internal
from sessions.api.urls import v1_routes as sessions_v1
from workers.api.urls import v1_routes as workers_v1

app_name = "api"

v1 = ApiRouter()
for prefix, viewset, basename in (*sessions_v1, *grading_v1, *workers_v1, *scheduling_v1):
    v1.register(prefix, viewset, basename=basename)

internal = ApiRouter()
for prefix, viewset, basename in (*sessions_internal, *grading_internal):
    internal.register(prefix, viewset, basename=basename)


@csrf_exempt
def not_found(request, *args, **kwargs):
    """Unknown paths under the API answer the JSON error contract instead of an HTML page (or a CSRF 403)."""
    return JsonResponse({"detail": "Not found."}, status=404)


urlpatterns = [
    path("v1/status/", StatusView.as_view(), name="status"),
    path("v1/attention/", AttentionView.as_view(), name="attention"),
    path("v1/", include(v1.urls)),
    path("internal/", include(internal.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", login_required(SpectacularSwaggerView.as_view(url_name="api:schema")), name="docs"),
    # [\s\S], not ".": a path holding a newline gets the JSON 404 too.
    re_path(r"^(?:v1|internal)(?:/[\s\S]*)?$", not_found),
]
