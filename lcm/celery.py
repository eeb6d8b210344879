"""The Celery app: Redis broker, one beat schedule for every loop (intervals from settings; ticks expire).

`acks_late` + `task_reject_on_worker_lost`: a worker killed mid-task leaves the message to be
redelivered, and the reconcilers are idempotent; prefetch 1 keeps work spread evenly.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lcm.settings")

app = Celery("lcm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["lcm"])


@app.on_after_configure.connect
def _beat_schedule(sender, **kwargs):
    from lcm.loops import LOOPS

    for name, loop in LOOPS.items():
        sender.add_periodic_task(
            loop.interval,
            sender.signature("lcm.tick", args=[name], options={"expires": max(1.0, loop.interval)}),
            name=f"tick-{name}",
        )
