"""The CML 2.9 simulator: many virtual CML controllers behind one server (EXTERNAL-SYSTEMS.md §1)."""

from simulators.cml.app import OPERATIONS, CMLSimulator

__all__ = ["OPERATIONS", "CMLSimulator"]
