"""The scaling policies `bench_autoscale` replays side by side (SPEC §10), each a `tick(replay)` over
`lcm.tools.bench.autoscale_sim.Replay`:

- `LcmScaler`: LCM's autoscaler, `workers.autoscaler.plan`, planning from the forecast: every booked session
  whose placement moment (its start − the placement lead, or its booking when later) falls within a template's
  boot time is demand now, on the capacity the fleet will have then (sessions that end before it leave), so a
  worker launched for it is RUNNING by its placement lead; the template mix is `plan`'s cheapest per session;
  placement is end-time aware; an empty worker no booking needs within the boot time drains at once (the
  forecast, not a cooldown, keeps the workers about to be used). A walk-in reserve, sized from the last hour's
  walk-ins that a launch would serve late, keeps running room for them (it keeps workers; it launches none).
  The forecast horizon is the fastest template's boot time (in a mixed fleet a slower template launched for
  a session boots after its placement lead; the planner's cheapest mix here picks the fastest on a tie).
- `StaticScaler`: a fixed fleet sized for the peak (the fewest workers of the template that serve every booked
  session on time, from the ideal curve's peak up), RUNNING from the first placement to the last release.
- `ReactiveScaler`: a utilisation-threshold scaler: utilisation is the busiest dimension (CPU, memory, nodes) of
  what the RUNNING and booting workers hold plus what waits to be placed; above 80 % it launches the workers
  that bring it back to 80 % (then waits a 5-minute cooldown); below 20 % for a 15-minute cooldown it drains
  the least used worker.
"""

import math
from dataclasses import replace

from lcm.tools.bench.autoscale_sim import SimWorker, _add, _at, capacity_of
from workers.autoscaler import PendingSession, Policy, WorkerState, plan
from workers.states import ScaleAction

A = ScaleAction
WALK_IN_WINDOW = 60  # minutes of walk-in history the reserve is sized from


class LcmScaler:
    name = "LCM"
    end_aware = True

    def __init__(self, policy: Policy, *, forecast: bool = True, walk_in_reserve: bool = True):
        self.policy, self.forecast, self.walk_in_reserve = policy, forecast, walk_in_reserve

    def prepare(self, replay) -> None:
        pass

    def tick(self, r) -> None:
        t = r.t
        horizon = min(tp.startup_minutes for tp in r.templates) if self.forecast else 0
        pending = [s for s in r.pending() if r.place_at[s.id] <= t + horizon]
        pending_in = [PendingSession(s.id, s.booking.demand, _at(s.booking.start)) for s in pending]
        pending_in.extend(self._walk_in_reserve(r, t, horizon))
        states = [self._state(r, w, t + horizon) for w in r.workers.values() if w.status != "STOPPED" or w.lcm_stopped]
        decisions = plan(_at(t), pending_in, states, r.templates, self.policy, last_scale_up=r.last_scale_up)
        for decision in decisions:
            self._apply(r, decision, t)

    def _walk_in_reserve(self, r, t: float, horizon: float) -> list[PendingSession]:
        """Room kept for the walk-ins to come that a launch would serve late (booked closer to their start than a
        boot and an instantiation): as many as arrived over the last `WALK_IN_WINDOW` minutes per boot time, at
        the size of the largest of them."""
        if not self.walk_in_reserve:
            return []
        soon = horizon + r.leads.instantiate  # a walk-in booked closer to its start than this needs room now
        recent = [
            s.booking
            for s in r.sessions
            if t - WALK_IN_WINDOW < s.booking.booked <= t and s.booking.start - s.booking.booked < soon
        ]
        if not recent:
            return []
        count = math.ceil(len(recent) * (horizon + r.leads.instantiate) / WALK_IN_WINDOW)
        largest = max(recent, key=lambda b: (b.demand.cpu_cores, b.demand.memory_gb, b.demand.node_count)).demand
        return [PendingSession(f"walk-in:{i}", largest, _at(t)) for i in range(count)]

    @staticmethod
    def _state(r, worker: SimWorker, until: float) -> WorkerState:
        """The worker as the plan sees it: its capacity once the sessions that leave before `until` have left."""
        used = worker.used
        for session_id in worker.sessions:
            session = r.by_id[session_id]
            if session.release_at <= until:
                used = _add(used, session.booking.demand, -1)
        capacity = capacity_of(worker, used=used)
        capacity = replace(capacity, sessions=sum(1 for s in worker.sessions if r.by_id[s].release_at > until))
        serving = worker.status in ("STARTING", "RUNNING", "DRAINING")
        return WorkerState(
            capacity=capacity,
            region=worker.template.region,
            desired_status="RUNNING" if serving else "STOPPED",
            lcm_stopped=worker.lcm_stopped,
            empty_since=_at(worker.empty_since),
            last_activity_at=_at(worker.empty_since),
            cost_per_hour=worker.template.cost_per_hour,
            up_since=_at(worker.up_since),
        )

    def _apply(self, r, decision, t: float) -> None:
        if decision.action == A.LAUNCH:
            template = next(tp for tp in r.templates if tp.id == decision.template_id)
            if not any(s in r.place_at for s in decision.sessions):
                return  # only the walk-in reserve: it keeps running workers, it launches none
            due = min(r.place_at[s] for s in decision.sessions if s in r.place_at)
            if self.forecast and due > t + template.startup_minutes:
                return  # this template boots faster: launched on a later tick, still RUNNING in time
            r.launch(template)
        elif decision.action == A.START:
            r.start(r.workers[decision.worker_id])
        elif decision.action == A.CANCEL_DRAIN:
            r.cancel_drain(r.workers[decision.worker_id])
        elif decision.action in (A.DRAIN, A.PAUSE):
            worker = r.workers[decision.worker_id]
            if worker.sessions:
                return  # planned empty (its sessions leave within the horizon): drained when they have left
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
