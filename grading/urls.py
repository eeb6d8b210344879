"""Pages: score reports and their CSV export (SPEC §5.4)."""

from django.urls import path

from grading import views

app_name = "grading"

urlpatterns = [
    path("reports/", views.report_list, name="report_list"),
    path("reports/export.csv", views.report_export, name="report_export"),
    path("sessions/<uuid:pk>/regrade/", views.session_regrade, name="session_regrade"),
]
