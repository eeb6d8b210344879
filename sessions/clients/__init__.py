"""The external system the sessions app owns: the Lab Delivery System (LDS)."""

from sessions.clients.lds import CreatedSession, Device, LDSClient, lds_client

__all__ = ["CreatedSession", "Device", "LDSClient", "lds_client"]
