from django.apps import AppConfig


class LcmConfig(AppConfig):
    """The shared kernel as an app, so it can hold kernel models (API tokens, loop heartbeats, received events),
    template tags and commands."""

    name = "lcm"
    label = "lcm"
    verbose_name = "LCM kernel"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: the projection, the notifications and the loops read the models, which exist only once the
        # app registry is ready.
        from django.conf import settings

        from lcm import live, live_polls, loops, metrics, notifications, projection

        live.connect()
        live_polls.connect()
        if settings.LCM_PROJECTION_ENABLED:
            projection.connect()
        notifications.connect()
        loops.register(
            loops.Loop(
                notifications.LOOP,
                notifications.due_deliveries,
                "LCM_LOOP_NOTIFICATIONS_SECONDS",
                reconciler=notifications.deliver,
                on_error=notifications.record_error,
                description="Delivers notifications (email, webhooks) and retries them",
            )
        )
        metrics.register_gauges(loops.loop_gauges)
