from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """The CML worker fleet: templates, workers, their labs and ports."""

    name = "workers"
    verbose_name = "Workers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import post_migrate

        from workers.services import seed_templates_after_migrate

        post_migrate.connect(seed_templates_after_migrate, sender=self)
