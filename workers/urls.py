"""Pages: workers (SPEC §5.4)."""

from django.urls import path

from workers import views

app_name = "workers"

urlpatterns = [
    path("workers/", views.worker_list, name="worker_list"),
    path("workers/new/", views.worker_create, name="worker_create"),
    path("workers/<uuid:pk>/", views.worker_detail, name="worker_detail"),
    path("workers/<uuid:pk>/actions/<slug:action>/", views.worker_action, name="worker_action"),
    path("workers/<uuid:pk>/confirm/<slug:action>/", views.worker_confirm, name="worker_confirm"),
]
