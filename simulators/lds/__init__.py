"""The LDS (Lab Delivery System, Reservations API v3) simulator: `LDSSimulator` in `app.py`."""

from simulators.lds.app import LDSSimulator

__all__ = ["LDSSimulator"]
