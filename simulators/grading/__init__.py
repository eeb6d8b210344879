"""The Grading Engine (API v1) simulator: `GradingSimulator` in `app.py`."""

from simulators.grading.app import GradingSimulator

__all__ = ["GradingSimulator"]
