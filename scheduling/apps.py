from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    """Placement (the scheduler loop), capacity, and the scheduler and settings pages."""

    name = "scheduling"
    verbose_name = "Scheduling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: the scheduler uses the models, which exist only once the app registry is ready.
        from lcm import loops, metrics, notifications
        from scheduling import attention_notices, fleet_samples, scheduler, selectors

        loops.register(
            loops.Loop(
                "placement",
                scheduler.place_pending,
                "LCM_LOOP_PLACEMENT_SECONDS",
                description="Places PENDING sessions on workers (leader only)",
            )
        )
        loops.register(
            loops.Loop(
                "fleet_samples",
                fleet_samples.sample_fleet,
                "LCM_LOOP_FLEET_SAMPLES_SECONDS",
                description="Samples the fleet's utilisation for the dashboard chart",
            )
        )
        loops.register(
            loops.Loop(
                "attention",
                attention_notices.announce_attention,
                "LCM_LOOP_ATTENTION_SECONDS",
                description="Tells the notification recipients about new needs-attention items",
            )
        )
        for kind, description in attention_notices.KINDS.items():
            notifications.register_kind(kind, description)
        metrics.register_gauges(selectors.fleet_gauges)
