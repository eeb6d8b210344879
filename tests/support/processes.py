"""What the process tests read from a running stack."""

from lcm.tools.stack import Stack


def log_tails(stack: Stack, names=("worker", "web")) -> str:
    return "\n".join(f"--- {name} ---\n{stack.log_tail(name, 15)}" for name in names)
