"""The scheduling app holds no models: system settings live in `workers.models`, loop heartbeats in
the kernel (`lcm.models`)."""
