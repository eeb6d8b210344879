from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    """Placement, port allocation, capacity and the system settings that steer them."""

    name = "scheduling"
    verbose_name = "Scheduling"
    default_auto_field = "django.db.models.BigAutoField"
