from django.apps import AppConfig


class LabletSessionsConfig(AppConfig):
    """Lablet definitions, sessions and user sessions.

    The label is `lablets` so it does not clash with `django.contrib.sessions`.
    """

    name = "sessions"
    label = "lablets"
    verbose_name = "Lablet sessions"
    default_auto_field = "django.db.models.BigAutoField"
