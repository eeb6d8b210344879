"""Helpers shared by the test packages (imported by conftests and test modules; conftests keep the fixtures):
`commands` (run a management command, capture its output or its one-line error), `waiting` (poll a condition
with a timeout), `simulators` (start the simulators in-process, add a virtual CML), `loops` (tick the control
loops by hand) and `processes` (a real stack's logs)."""
