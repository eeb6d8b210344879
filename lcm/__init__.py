"""Lablet Cloud Manager: the Django project and the shared kernel every app uses."""

__version__ = "0.1.0"
