from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """The CML worker fleet: templates, workers, their labs and ports, and the system settings."""

    name = "workers"
    verbose_name = "Workers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: these modules use the models, which exist only once the app registry is ready.
        from django.db.models.signals import post_migrate

        from lcm import loops, notifications, projection
        from lcm.templatetags.badges import register_colours
        from workers import autoscaling, discovery, notices, reconcilers
        from workers.states import (
            DESIRED_BADGE_COLOURS,
            LAB_BADGE_COLOURS,
            LICENSE_BADGE_COLOURS,
            WORKER_BADGE_COLOURS,
            WorkerStatus,
        )
        from workers.template_services import seed_templates_after_migrate

        post_migrate.connect(seed_templates_after_migrate, sender=self)
        loops.register(
            loops.Loop(
                "workers",
                reconcilers.workers_needing_work,
                "LCM_LOOP_WORKERS_SECONDS",
                reconciler=reconcilers.reconcile_worker,
                on_error=reconcilers.record_failure,
                description="Makes EC2 and CML match each worker's desired state",
            )
        )
        loops.register(
            loops.Loop(
                "autoscaler",
                autoscaling.autoscale_tick,
                "LCM_LOOP_AUTOSCALER_SECONDS",
                description="Adds and drains workers",
            )
        )
        loops.register(
            loops.Loop(
                "discovery",
                discovery.discovery_tick,
                "LCM_LOOP_DISCOVERY_SECONDS",
                description="Finds unknown instances and labs",
            )
        )
        projection.register(("worker", "worker.desired"), reconcilers.project_workers)
        for kind, description in notices.KINDS.items():
            notifications.register_kind(kind, description)
        notifications.register_trigger("worker", [WorkerStatus.FAILED], notices.worker_failed_notices)
        register_colours("worker", WORKER_BADGE_COLOURS)
        register_colours("desired", DESIRED_BADGE_COLOURS)
        register_colours("licence", LICENSE_BADGE_COLOURS)
        register_colours("lab", LAB_BADGE_COLOURS)
