"""URL map: pages, admin, auth, health, metrics."""

from django.contrib import admin
from django.urls import include, path

from lcm import health, metrics, oidc, webhooks

admin.site.site_header = "Lablet Cloud Manager"
admin.site.site_title = "LCM admin"
admin.site.index_title = "Raw data and admin actions"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # Single sign-on (SPEC §12): 404 unless LCM_OIDC_ISSUER is set.
    path("oidc/authenticate/", oidc.OidcSignIn.as_view(), name="oidc-authenticate"),
    path("oidc/callback/", oidc.OidcCallback.as_view(), name="oidc-callback"),
    path("api/events", webhooks.events_webhook, name="events-webhook"),
    path("api/", include("lcm.api.urls")),
    path("", include("workers.urls")),
    path("", include("scheduling.urls")),
    path("", include("grading.urls")),
    path("", include("sessions.urls")),
]
