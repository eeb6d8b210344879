from django.apps import AppConfig


class LcmConfig(AppConfig):
    """The shared kernel as an app, so it can hold kernel models (API tokens, loop heartbeats, received events),
    template tags and commands."""

    name = "lcm"
    label = "lcm"
    verbose_name = "LCM kernel"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: the projection reads the models, which exist only once the app registry is ready.
        from django.conf import settings

        from lcm import live, projection

        live.connect()
        if settings.LCM_PROJECTION_ENABLED:
            projection.connect()
