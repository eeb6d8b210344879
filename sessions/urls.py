from django.urls import path

from sessions import views

app_name = "sessions"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("sessions/", views.session_list, name="session_list"),
    path("sessions/<uuid:pk>/", views.session_detail, name="session_detail"),
]
