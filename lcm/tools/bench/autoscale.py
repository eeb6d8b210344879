"""`manage.py bench_autoscale`: LCM's autoscaler beside the scalers people run, on booking traces (SPEC §10).

No EC2, no database writes: each trace is replayed on a simulated clock (`lcm.tools.bench.autoscale_sim`) for
each fleet (every enabled ENTERPRISE template alone, and all of them mixed) under each policy
(`lcm.tools.bench.autoscale_peers`): LCM (forecast planning, cheapest template mix, end-time aware placement),
a static fleet sized for the peak, and a reactive utilisation-threshold scaler (up above 80 %, down below 20 %
after a cooldown). A mixed fleet's peers are the cheapest of their single-template runs.

Figures per row: booked sessions (booked at least the placement lead ahead) READY before their start; walk-ins
(booked later) ready on time, i.e. READY by their start, or as soon as they can be instantiated when booked
closer to their start than that (they waited for no capacity); worker-hours billed (from the launch until
stopped, boots and stops included); the ideal capacity curve (at every tick the cheapest template's fewest
workers that could hold what the bookings claim then, from `max(booked, start − placement lead)` to the end of
the timeslot plus teardown: instant boots, perfect packing) in worker-hours; the ratio of the cost to the ideal
curve's cost (for one template, the same as the ratio of worker-hours); the cost.

LCM's targets on every fleet and trace: 100 % booked READY before their start, ≥ 95 % walk-ins on time, ratio
≤ 1.08, cost below both peers; the mixed fleet costs no more than the cheapest single template.

Beside LCM's breakdown, per single template, the boot-aware floor (`autoscale_sim.boot_floor`): the ideal curve
plus the boots and stops that capacity RUNNING by the placement lead costs any policy. Where it is above 1.08,
the targets line says that no policy can meet the ratio target.
"""

import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from django.conf import settings

from lcm.management.command_utils import fail
from lcm.tools.bench import BenchRun
from lcm.tools.bench.autoscale_peers import LcmScaler, ReactiveScaler, StaticScaler
from lcm.tools.bench.autoscale_sim import SPENT, Leads, Replay, ideal_curve
from lcm.tools.bench.autoscale_traces import generate_exam_day, generate_trace, read_trace
from workers.autoscaler import Policy, TemplateOption
from workers.autoscaling import template_option
from workers.models import SystemSettings, WorkerTemplate
from workers.states import LicenseType
from workers.template_services import load_template_file

TRACES = Path(settings.BASE_DIR) / "workers" / "traces"
DEFAULT_TRACE = TRACES / "day.csv"
DEFAULT_TRACES = (DEFAULT_TRACE, TRACES / "exam_day.csv")
TARGET_RATIO = 1.08
TARGET_WALK_INS = 95.0


class AutoscaleBench(BenchRun):
    """One run of `bench_autoscale`: read (or generate) the traces, replay every fleet and policy, print."""

    def run(self, options) -> None:
        if options["sessions"] < 1 or options["tick_seconds"] <= 0 or options["max_workers"] < 1:
            raise fail("--sessions and --max-workers must be at least 1 and --tick-seconds positive")
        traces = [(self._shown(path), self._read(path)) for path in self._paths(options)]
        templates = _templates()
        try:
            fleets = _fleets(templates, options["template"])
        except ValueError as exc:
            raise fail(exc) from None
        leads = self._leads(options)
        rows = []
        for shown, bookings in traces:
            rows.extend(compare(shown, bookings, fleets, leads, options))
        summary = targets(rows)
        if options["json"]:
            self.stdout.write(json.dumps({"rows": rows, "targets": summary}, indent=2))
            return
        self._print(rows, summary)

    @staticmethod
    def _paths(options) -> list:
        paths = []
        try:
            if options["generate"]:
                generate_trace(options["generate"], sessions=options["sessions"], seed=options["seed"])
                paths.append(options["generate"])
            if options["generate_exam"]:
                generate_exam_day(options["generate_exam"], seed=options["seed"])
                paths.append(options["generate_exam"])
        except OSError as exc:
            raise fail(f"cannot write {exc.filename}: {exc.strerror}") from None
        paths.extend(options["trace"] or [])
        return paths or list(DEFAULT_TRACES)

    @staticmethod
    def _read(path) -> list:
        try:
            return read_trace(path)
        except OSError as exc:
            raise fail(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise fail(f"{path}: {exc}") from None

    @staticmethod
    def _shown(path) -> str:
        shown = Path(path).resolve()
        return str(shown.relative_to(settings.BASE_DIR)) if shown.is_relative_to(settings.BASE_DIR) else str(path)

    @staticmethod
    def _leads(options) -> Leads:
        system = SystemSettings.objects.filter(pk=1).first() or SystemSettings()  # read only: defaults if unset
        placement = options["placement_lead"]
        boot = options["boot_lead"]
        return Leads(
            system.placement_lead_minutes if placement is None else placement,
            system.boot_lead_minutes if boot is None else boot,
            options["instantiate_minutes"],
            options["teardown_minutes"],
            options["stop_minutes"],
            options["tick_seconds"] / 60,
        )

    def _print(self, rows: list[dict], summary: dict) -> None:
        header = (
            f"{'trace':28} {'fleet':11} {'policy':20} {'booked on time':>16} {'walk-ins':>14} "
            f"{'worker-h':>9} {'ideal-h':>8} {'ratio':>7} {'cost $':>8}"
        )
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for r in rows:
            booked = f"{r['booked_ahead_ready_on_time']}/{r['booked_ahead']} {r['on_time_percent']:.0f}%"
            walk = f"{r['walk_ins_ready_on_time']}/{r['walk_ins']} {r['walk_ins_percent']:.1f}%"
            ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
            self.stdout.write(
                f"{r['trace']:28} {r['fleet']:11} {r['policy']:20} {booked:>16} {walk:>14} "
                f"{r['worker_hours']:>9.1f} {r['ideal_worker_hours']:>8.1f} {ratio:>7} {r['cost']:>8.2f}"
            )
        self._print_spent([r for r in rows if r["policy"] == "LCM"])
        self.stdout.write("")
        self.stdout.write(
            f"LCM targets: booked 100% READY before start, walk-ins >= {TARGET_WALK_INS:.0f}% on time, "
            f"cost <= {TARGET_RATIO} x the ideal curve, below both peers; mixed fleet <= cheapest single template"
        )
        for line in summary["lines"]:
            self.stdout.write(line)
        self.stdout.write("targets met" if summary["met"] else "TARGETS MISSED")

    def _print_spent(self, rows: list[dict]) -> None:
        """Where LCM's worker-hours go, per row, as fractions of the ideal curve (cost-weighted)."""
        self.stdout.write("")
        self.stdout.write(
            "Where LCM's worker-hours go, in fractions of the ideal curve (waste: all but busy_ideal; ratio - 1 is "
            "waste less the ideal time no worker covered, 1 - busy_ideal):"
        )
        header = (
            f"{'trace':28} {'fleet':11} "
            + " ".join(f"{name:>13}" for name in SPENT)
            + f" {'waste':>7} {'ratio-1':>7} {'floor':>7} {'vs floor':>8}"
        )
        self.stdout.write(header)
        for r in rows:
            spent = r["spent"]
            excess = sum(spent[name] for name in SPENT if name != "busy_ideal")
            figures = " ".join(f"{spent[name]:>13.3f}" for name in SPENT)
            floor = r.get("floor_ratio")
            shown = f"{floor:>7.3f} {r['ratio'] / floor:>8.3f}" if floor else f"{'-':>7} {'-':>8}"
            self.stdout.write(
                f"{r['trace']:28} {r['fleet']:11} {figures} {excess:>7.3f} {r['ratio'] - 1:>7.3f} {shown}"
            )
        self.stdout.write(
            "boot: billed while booting (a worker is RUNNING by the placement lead, the ideal boots instantly); "
            "stop: while stopping; idle_unused: RUNNING before its first session; idle_emptied: empty after "
            "holding sessions; fragmentation: workers holding sessions beyond the ideal count (sessions never move)"
        )
        self.stdout.write(
            "floor: the least any policy can bill with capacity RUNNING by the placement lead, boots and stops "
            "billed, perfect packing and free migration, as a ratio to the ideal curve (single templates); vs "
            "floor: LCM's cost over it"
        )


def _templates() -> list[TemplateOption]:
    """The enabled worker templates: from the database, else from the templates file."""
    stored = [template_option(t) for t in WorkerTemplate.objects.filter(enabled=True).order_by("cpu_cores", "name")]
    if stored:
        return stored
    # A file entry has the fields of a WorkerTemplate; its name stands in for the id it does not have yet.
    entries = [e for e in load_template_file() if e["enabled"]]
    return [template_option(SimpleNamespace(pk=e["name"], **e)) for e in sorted(entries, key=lambda e: e["cpu_cores"])]


def _fleets(templates: list[TemplateOption], name: str | None) -> list[tuple[str, list[TemplateOption]]]:
    """(fleet name, templates): the named template alone, or each shared (ENTERPRISE) template alone and mixed."""
    if name:
        for template in templates:
            if template.name == name:
                return [(template.name, [template])]
        raise ValueError(f"no enabled worker template named {name!r}")
    shared = [t for t in templates if t.license_type == LicenseType.ENTERPRISE]
    if not shared:
        raise ValueError("no enabled ENTERPRISE worker template")
    fleets = [(t.name, [t]) for t in shared]
    return fleets + [("mixed", shared)] if len(shared) > 1 else fleets


def lcm_policy(options) -> Policy:
    """LCM's autoscaler as the bench runs it: planning from the forecast, so no cooldowns (they guard a reactive
    scaler against flapping; the forecast says what is needed when)."""
    return Policy(
        autoscaling_enabled=True,
        min_workers=0,
        max_workers=options["max_workers"],
        scale_up_cooldown=timedelta(0),
        scale_down_cooldown=timedelta(0),
        idle_detection_enabled=False,
    )


def _row(trace: str, fleet: str, policy: str, figures: dict) -> dict:
    return {"trace": trace, "fleet": fleet, "policy": policy, **figures}


def static_size(bookings, template: TemplateOption, leads: Leads) -> tuple[int, dict]:
    """The fewest workers of the template, from the ideal curve's peak up, that serve every booked session on time
    (at most twice the peak), and their figures."""
    horizon = max(b.end for b in bookings) + leads.placement + 180
    size = max(1, ideal_curve(bookings, [template], leads, horizon)["peak"])
    limit = 2 * size
    while True:
        figures = Replay(bookings, [template], StaticScaler(template, size), leads).run()
        if figures["on_time_percent"] == 100.0 or size >= limit:
            return size, figures
        size += max(1, size // 20)


def compare(trace: str, bookings, fleets, leads: Leads, options) -> list[dict]:
    """Every fleet under every policy on one trace."""
    rows: list[dict] = []
    peers: dict[str, list[dict]] = {"static": [], "reactive": []}
    for fleet, templates in fleets:
        lcm = Replay(bookings, templates, LcmScaler(lcm_policy(options)), leads).run()
        rows.append(_row(trace, fleet, "LCM", lcm))
        if len(templates) == 1:
            template = templates[0]
            size, static = static_size(bookings, template, leads)
            up, down = options["scale_up_cooldown"], options["scale_down_cooldown"]
            reactive_scaler = ReactiveScaler(template, up_cooldown=5 if up is None else up,
                                             down_cooldown=15 if down is None else down)  # fmt: skip
            reactive = Replay(bookings, templates, reactive_scaler, leads).run()
            peers["static"].append(_row(trace, fleet, f"static ({size})", static))
            peers["reactive"].append(_row(trace, fleet, "reactive 80/20", reactive))
            rows.extend(peers["static"][-1:] + peers["reactive"][-1:])
        else:
            for kind, runs in peers.items():
                best = min(runs, key=lambda r: r["cost"])
                rows.append({**best, "fleet": fleet, "policy": f"{kind}: {best['fleet']}"})
    return rows


def targets(rows: list[dict]) -> dict:
    """Which of LCM's targets hold, one line per trace and fleet."""
    lines, met = [], True
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["trace"], r["fleet"]), []).append(r)
    for (trace, fleet), group in groups.items():
        lcm, others = group[0], group[1:]
        checks = {
            "booked 100%": lcm["on_time_percent"] == 100.0,
            f"walk-ins >= {TARGET_WALK_INS:.0f}%": lcm["walk_ins_percent"] >= TARGET_WALK_INS,
            f"ratio <= {TARGET_RATIO}": lcm["ratio"] is not None and lcm["ratio"] <= TARGET_RATIO,
            "cheaper than both peers": all(lcm["cost"] < o["cost"] for o in others),
        }
        if fleet == "mixed":
            singles = [g[0]["cost"] for (t, f), g in groups.items() if t == trace and f != "mixed"]
            checks["<= cheapest single template"] = lcm["cost"] <= min(singles) + 1e-9
        missed = [name + _floor_note(name, lcm) for name, ok in checks.items() if not ok]
        met = met and not missed
        state = "met" if not missed else "MISSED: " + ", ".join(missed)
        lines.append(f"  {trace} / {fleet}: {state}")
    return {"met": met, "lines": lines}


def _floor_note(check: str, lcm: dict) -> str:
    """For a missed ratio target, how the boot-aware floor (`autoscale_sim.boot_floor`) stands against it."""
    floor = lcm.get("floor_ratio")
    if check != f"ratio <= {TARGET_RATIO}" or not floor:
        return ""
    reach = "no policy can meet it" if floor > TARGET_RATIO else "boots alone do not rule it out"
    return f" (the floor is {floor:.3f}: {reach}; LCM is {lcm['ratio'] / floor:.3f} x the floor)"
