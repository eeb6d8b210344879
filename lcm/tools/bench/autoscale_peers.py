"""The scaling policies `bench_autoscale` replays side by side (SPEC §10), each a `tick(replay)` over
`lcm.tools.bench.autoscale_sim.Replay`:

- `LcmScaler`: LCM's autoscaler, the production tick's planner `workers.autoscaler.plan_ahead` (the same
  functions `workers.autoscaling.autoscale_tick` calls, fed from the replay): every booked session whose
  placement moment (its start − the placement lead, or its booking when later) falls within a template's boot
  time is demand now, on the capacity the fleet will have then (`after_leaving`), so a worker launched for it is
  RUNNING by its placement lead and no earlier; the template mix is `plan`'s cheapest per session; placement is
  end-time aware; an empty worker no booking needs within the boot time drains at once (the forecast, not a
  cooldown, keeps the workers about to be used). `walk_in_reserve`, sized from the last hour's walk-ins that a
  launch would serve late, keeps running room for them (it keeps workers; it launches none). The forecast
  horizon is the fastest template's boot time (in a mixed fleet a slower template launched for a session boots
  after its placement lead; the planner's cheapest mix here picks the fastest on a tie).
- `StaticScaler`: a fixed fleet sized for the peak (the fewest workers of the template that serve every booked
  session on time, from the ideal curve's peak up), RUNNING from the first placement to the last release.
- `ReactiveScaler`: a utilisation-threshold scaler: utilisation is the busiest dimension (CPU, memory, nodes) of
  what the RUNNING and booting workers hold plus what waits to be placed; above 80 % it launches the workers
  that bring it back to 80 % (then waits a 5-minute cooldown); below 20 % for a 15-minute cooldown it drains
  the least used worker.
"""

import math
from datetime import timedelta

from lcm.tools.bench.autoscale_sim import SimWorker, _at, capacity_of
from workers.autoscaler import (
    PendingSession,
    Policy,
    WorkerState,
    after_leaving,
    keep_horizon,
    plan_ahead,
    walk_in_reserve,
)
from workers.states import ScaleAction

A = ScaleAction


class LcmScaler:
    """LCM's autoscaler: the production tick's planner (`workers.autoscaler.plan_ahead` over `after_leaving` workers,
    with `walk_in_reserve`), fed from the replay instead of the database."""

    name = "LCM"
    end_aware = True

    def __init__(self, policy: Policy, *, forecast: bool = True, walk_in_reserve: bool = True):
        self.policy, self.forecast, self.walk_in_reserve = policy, forecast, walk_in_reserve

    def prepare(self, replay) -> None:
        pass

    def tick(self, r) -> None:
        t = r.t
        horizon = min(tp.startup_minutes for tp in r.templates) if self.forecast else 0
        now, until = _at(t), _at(t + horizon)
        keep = keep_horizon(horizon, r.leads.stop).total_seconds() / 60 if self.forecast else 0
        pending = [
            PendingSession(s.id, s.booking.demand, _at(s.booking.start), due=_at(r.place_at[s.id]))
            for s in r.pending()
            if r.place_at[s.id] <= t + keep
        ]
        reserve = []
        if self.walk_in_reserve:
            recent = [(_at(s.booking.booked), _at(s.booking.start), s.booking.demand) for s in r.sessions]
            instantiate = timedelta(minutes=r.leads.instantiate)
            reserve = walk_in_reserve(now, recent, timedelta(minutes=horizon), instantiate=instantiate)
        states = [self._state(r, w, until) for w in r.workers.values() if w.status != "STOPPED" or w.lcm_stopped]
        decisions = plan_ahead(
            now, pending, states, r.templates, self.policy, last_scale_up=r.last_scale_up, reserve=reserve
        )
        for decision in decisions:
            self._apply(r, decision)

    @staticmethod
    def _state(r, worker: SimWorker, until) -> WorkerState:
        serving = worker.status in ("STARTING", "RUNNING", "DRAINING")
        state = WorkerState(
            capacity=capacity_of(worker),
            region=worker.template.region,
            desired_status="RUNNING" if serving else "STOPPED",
            lcm_stopped=worker.lcm_stopped,
            empty_since=_at(worker.empty_since),
            last_activity_at=_at(worker.empty_since),
            cost_per_hour=worker.template.cost_per_hour,
            up_since=_at(worker.up_since),
        )
        leaving = [(r.by_id[s].booking.demand, _at(r.by_id[s].release_at)) for s in worker.sessions]
        return after_leaving(state, leaving, until)

    @staticmethod
    def _apply(r, decision) -> None:
        if decision.action == A.LAUNCH:
            r.launch(next(tp for tp in r.templates if tp.id == decision.template_id))
        elif decision.action == A.START:
            r.start(r.workers[decision.worker_id])
        elif decision.action == A.CANCEL_DRAIN:
            r.cancel_drain(r.workers[decision.worker_id])
        elif decision.action in (A.DRAIN, A.PAUSE):
            worker = r.workers[decision.worker_id]
            if worker.sessions:
                return  # planned empty (its sessions leave within the horizon): as `worker_drain_if_idle` refuses
            r.drain(worker)


class StaticScaler:
    name = "static (peak)"
    end_aware = False

    def __init__(self, template, size: int):
        self.template, self.size = template, size

    def prepare(self, r) -> None:
        first = min(r.place_at.values())
        for _ in range(self.size):
            r.launch(self.template, ready_at=first)

    def tick(self, r) -> None:
        if any(s.status in ("PENDING", "SCHEDULED", "READY") for s in r.sessions):
            return
        for worker in r.workers.values():
            if worker.status == "RUNNING":
                r.drain(worker)


class ReactiveScaler:
    name = "reactive (80/20)"
    end_aware = False

    def __init__(self, template, *, up: float = 0.8, down: float = 0.2, up_cooldown: int = 5, down_cooldown: int = 15):
        self.template, self.up, self.down = template, up, down
        self.up_cooldown, self.down_cooldown = up_cooldown, down_cooldown
        self.last_up = self.last_change = -math.inf

    def prepare(self, r) -> None:
        pass

    def tick(self, r) -> None:
        t, template = r.t, self.template
        active = [w for w in r.workers.values() if w.status in ("STARTING", "RUNNING")]
        waiting = [s.booking.demand for s in r.pending() if r.place_at[s.id] <= t]
        dims = (("cpu_cores", "cpu_cores"), ("memory_gb", "memory_gb"), ("node_count", "max_nodes"))
        worst, short = 0.0, 0
        for used_name, total_name in dims:
            used = sum(getattr(w.used, used_name) for w in active) + sum(getattr(d, used_name) for d in waiting)
            total = getattr(template, total_name) * len(active)
            util = used / total if total else (math.inf if used else 0.0)
            worst = max(worst, util)
            short = max(short, math.ceil(used / self.up / getattr(template, total_name) - len(active) - 1e-9))
        if worst > self.up and t - self.last_up >= self.up_cooldown:
            for _ in range(max(1, short)):
                r.launch(template)
            self.last_up = self.last_change = t
        elif worst < self.down and active and t - self.last_change >= self.down_cooldown:
            running = [w for w in active if w.status == "RUNNING"]
            if running:
                r.drain(min(running, key=lambda w: (w.used.cpu_cores, w.id)))
                self.last_change = t
