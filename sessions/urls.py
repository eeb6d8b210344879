"""Pages: dashboard, sessions and definitions (SPEC §5.4)."""

from django.urls import path

from sessions import views

app_name = "sessions"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("sessions/", views.session_list, name="session_list"),
    path("sessions/<uuid:pk>/", views.session_detail, name="session_detail"),
    path("sessions/<uuid:pk>/actions/<slug:action>/", views.session_action, name="session_action"),
    path("definitions/", views.definition_list, name="definition_list"),
    path("definitions/new/", views.definition_create, name="definition_create"),
    path("definitions/<uuid:pk>/", views.definition_detail, name="definition_detail"),
    path("definitions/<uuid:pk>/status/", views.definition_action, name="definition_action"),
]
