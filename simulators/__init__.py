"""Local, stateful, fault-injectable stand-ins for CML, LDS and the Grading Engine (moto for EC2).

They ship with the product: the embedded default and the tests run against them. Each
simulator mirrors its client one to one and keeps its control API under `/_sim/`.
"""
