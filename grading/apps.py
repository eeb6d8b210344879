from django.apps import AppConfig


class GradingConfig(AppConfig):
    """Grading sessions and score reports."""

    name = "grading"
    verbose_name = "Grading"
    default_auto_field = "django.db.models.BigAutoField"
