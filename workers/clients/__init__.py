"""Clients of the external systems the workers app owns; each knows one protocol and raises the typed errors of
`lcm.http`."""
