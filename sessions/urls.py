"""Pages: dashboard, sessions, definitions (SPEC §5.4), exams (SPEC §8) and the global search."""

from django.urls import path

from sessions import exam_views, search_views, views

app_name = "sessions"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("search/", search_views.search, name="search"),
    path("help/", views.help_page, name="help"),
    path("sessions/", views.session_list, name="session_list"),
    path("sessions/<uuid:pk>/", views.session_detail, name="session_detail"),
    path("sessions/<uuid:pk>/actions/<slug:action>/", views.session_action, name="session_action"),
    path("sessions/<uuid:pk>/confirm/<slug:action>/", views.session_confirm, name="session_confirm"),
    path("definitions/", views.definition_list, name="definition_list"),
    path("definitions/new/", views.definition_create, name="definition_create"),
    path("definitions/<uuid:pk>/", views.definition_detail, name="definition_detail"),
    path("definitions/<uuid:pk>/status/", views.definition_action, name="definition_action"),
    path("exams/", exam_views.exam_list, name="exam_list"),
    path("exams/new/", exam_views.exam_create, name="exam_create"),
    path("exams/<int:pk>/", exam_views.exam_detail, name="exam_detail"),
    path("exams/<int:pk>/actions/<slug:action>/", exam_views.exam_bulk_action, name="exam_action"),
    path("exams/<int:pk>/results.csv", exam_views.exam_results_csv, name="exam_results_csv"),
]
