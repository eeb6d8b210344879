"""Lablet Cloud Manager: the Django project and the shared kernel every app uses."""

__version__ = "0.1.0"

# Celery's app is loaded with Django so that `@shared_task`s bind to it (cookiecutter-django's wiring).
from lcm.celery import app as celery_app  # noqa: E402

__all__ = ["__version__", "celery_app"]
