from django.apps import AppConfig


class GradingConfig(AppConfig):
    """Grading sessions and score reports."""

    name = "grading"
    verbose_name = "Grading"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: the handler uses the models, which exist only once the app registry is ready.
        from grading import events
        from lcm import webhooks

        webhooks.register("LCM_GRADING_EVENT_PREFIX", events.handle_grading_event)
