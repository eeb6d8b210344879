"""`manage.py bench_autoscale --trace FILE`: replay a day of bookings through the autoscaler (SPEC §6.3).

No EC2, no database writes: a simulated clock ticks (one minute by default) and each tick does what
the loops do, with the same pure functions:
1. workers and sessions move on: a launched (or restarted) worker is RUNNING `startup_minutes` of its
   template after the decision; a placed session instantiates from `start − boot lead` (or at once
   when placed later) and is READY `--instantiate-minutes` after; a session holds its worker's capacity
   from placement until `--teardown-minutes` after its timeslot ends; a stopping worker is stopped
   `--stop-minutes` later;
2. placement: every PENDING session due within the placement lead goes to a RUNNING worker by
   `scheduling.placement.choose_worker`, soonest start first;
3. the autoscaler: `workers.autoscaler.plan` on what is left pending and the fleet, its decisions
   applied (LAUNCH, START, CANCEL_DRAIN, DRAIN, PAUSE);
4. a DRAINING worker with no session left stops.

Figures: how many sessions booked at least the placement lead ahead were READY before their start
(target: all of them), and the worker-hours billed (from the launch or start decision until stopped,
boots and stops included) against the peer computed in the same run: the ideal capacity curve, i.e.
at every tick the fewest workers of the template that could hold the capacity the booked sessions
claim then (from placement, `max(booked, start − placement lead)`, to the end of their timeslot plus
teardown), as the per-dimension lower bound `max(ceil(Σ demand / capacity))` with instant boots and
perfect packing. Target: worker-hours ≤ 1.10 × ideal. A stricter second peer (capacity only from
`start − boot lead`) is printed for information.

The trace is CSV, one booking per line, times in minutes from the trace's day start:
`booked_minute,start_minute,duration_minutes,cpu_cores,memory_gb,storage_gb,node_count,ports,license`
(`license` empty = any; `#` lines are comments). `--generate FILE` writes a synthetic day
(`workers/traces/day.csv` is one, seed 7).
"""

import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from django.conf import settings

from lcm.management.command_utils import fail
from lcm.tools.bench import BenchRun
from lcm.tools.bench.autoscale_sim import Booking, _at, generate_trace, read_trace, replay
from workers.autoscaler import PendingSession, Policy, TemplateOption, plan
from workers.autoscaling import template_option
from workers.models import SystemSettings, WorkerTemplate
from workers.states import ScaleAction
from workers.template_services import load_template_file

A = ScaleAction
DEFAULT_TRACE = Path(settings.BASE_DIR) / "workers" / "traces" / "day.csv"
TARGET_RATIO = 1.10


class AutoscaleBench(BenchRun):
    """One run of `bench_autoscale`: read (or generate) the trace, replay it, print the figures."""

    def run(self, options) -> None:
        if options["sessions"] < 1 or options["tick_seconds"] <= 0 or options["max_workers"] < 1:
            raise fail("--sessions and --max-workers must be at least 1 and --tick-seconds positive")
        path, bookings = self._trace(options)
        try:
            template = choose_template(bookings, _templates(), options["template"])
        except ValueError as exc:
            raise fail(exc) from None
        figures = self._replay(bookings, template, options)
        shown = Path(path).resolve()
        if shown.is_relative_to(Path(settings.BASE_DIR)):
            shown = shown.relative_to(Path(settings.BASE_DIR))
        figures = {"trace": str(shown), "template": template.name, **figures}
        figures["targets_met"] = figures["on_time_percent"] == 100.0 and (figures["ratio"] or 0) <= TARGET_RATIO
        if options["json"]:
            self.stdout.write(json.dumps(figures, indent=2))
            return
        self._print(figures)

    @staticmethod
    def _trace(options) -> tuple:
        """The trace's path and bookings (written first with `--generate`)."""
        if options["generate"]:
            try:
                generate_trace(options["generate"], sessions=options["sessions"], seed=options["seed"])
            except OSError as exc:
                raise fail(f"cannot write {options['generate']}: {exc.strerror}") from None
            path = options["generate"]
        else:
            path = options["trace"] or DEFAULT_TRACE
        try:
            return path, read_trace(path)
        except OSError as exc:
            raise fail(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise fail(f"{path}: {exc}") from None

    @staticmethod
    def _replay(bookings, template, options) -> dict:
        system = SystemSettings.objects.filter(pk=1).first() or SystemSettings()  # read only: defaults if unset

        def minutes(option, default):
            value = options[option]
            return default if value is None else value

        policy = Policy(
            autoscaling_enabled=True,
            min_workers=0,
            max_workers=options["max_workers"],
            scale_up_cooldown=timedelta(minutes=minutes("scale_up_cooldown", system.scale_up_cooldown_minutes)),
            scale_down_cooldown=timedelta(minutes=minutes("scale_down_cooldown", system.scale_down_cooldown_minutes)),
            idle_detection_enabled=False,
        )
        return replay(
            bookings,
            template,
            policy,
            placement_lead=minutes("placement_lead", system.placement_lead_minutes),
            boot_lead=minutes("boot_lead", system.boot_lead_minutes),
            instantiate_minutes=options["instantiate_minutes"],
            teardown_minutes=options["teardown_minutes"],
            stop_minutes=options["stop_minutes"],
            tick_minutes=options["tick_seconds"] / 60,
        )

    def _print(self, f: dict) -> None:
        self.stdout.write(f"trace {f['trace']}: {f['sessions']} sessions, template {f['template']}")
        self.stdout.write(
            f"booked >= placement lead ahead: {f['booked_ahead_ready_on_time']}/{f['booked_ahead']} READY before their "
            f"start ({f['on_time_percent']}%, target 100%)"
        )
        self.stdout.write(
            f"walk-ins (booked later): {f['walk_ins_ready_on_time']}/{f['walk_ins']} ready on time; "
            f"{f['expired']} expired unplaced"
        )
        self.stdout.write(
            f"worker-hours {f['worker_hours']} vs ideal capacity curve {f['ideal_worker_hours']} (peer): "
            f"ratio {f['ratio']} (target <= {TARGET_RATIO})"
        )
        self.stdout.write(
            f"strict ideal (capacity only from start - boot lead): {f['strict_ideal_worker_hours']} worker-hours"
        )
        self.stdout.write(
            f"workers launched {f['workers_launched']}, peak {f['peak_workers']}; decisions {f['decisions']}; "
            f"cost ${f['cost']} vs ideal ${f['ideal_cost']}"
        )
        self.stdout.write("targets met" if f["targets_met"] else "TARGETS MISSED")


def _templates() -> list[TemplateOption]:
    """The enabled worker templates: from the database, else from the templates file."""
    stored = [template_option(t) for t in WorkerTemplate.objects.filter(enabled=True)]
    if stored:
        return stored
    # A file entry has the fields of a WorkerTemplate; its name stands in for the id it does not have yet.
    return [
        template_option(SimpleNamespace(pk=entry["name"], **entry))
        for entry in load_template_file()
        if entry["enabled"]
    ]


def choose_template(bookings: list[Booking], templates: list[TemplateOption], name: str | None) -> TemplateOption:
    """The template named, or else the one the autoscaler itself launches for the trace's largest booking."""
    if name:
        for template in templates:
            if template.name == name:
                return template
        raise ValueError(f"no enabled worker template named {name!r}")
    largest = max(bookings, key=lambda b: (b.demand.cpu_cores, b.demand.memory_gb, b.demand.storage_gb))
    pending = [PendingSession("largest", largest.demand, _at(largest.start))]
    for decision in plan(_at(largest.booked), pending, [], templates, Policy()):
        if decision.action == A.LAUNCH:
            return next(t for t in templates if t.id == decision.template_id)
    raise ValueError("no enabled worker template fits the trace's largest booking")
