"""Pages: scheduler and settings (SPEC §5.4)."""

from django.urls import path

from scheduling import views

app_name = "scheduling"

urlpatterns = [
    path("scheduler/", views.scheduler, name="scheduler"),
    path("attention/", views.attention, name="attention"),
    path("settings/", views.settings_page, name="settings"),
    path("capacity/", views.capacity, name="capacity"),
]
