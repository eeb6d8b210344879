from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    """Placement (the scheduler loop), capacity, and the scheduler and settings pages."""

    name = "scheduling"
    verbose_name = "Scheduling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: the scheduler uses the models, which exist only once the app registry is ready.
        from lcm import loops, metrics
        from scheduling import fleet_samples, scheduler, selectors

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
        metrics.register_gauges(selectors.fleet_gauges)
