"""Booking traces of `bench_autoscale` (SPEC §10): the CSV format, reading it, and the two seeded generators
behind the shipped traces (`workers/traces/day.csv`, `workers/traces/exam_day.csv`).

A trace is CSV, one booking per line, times in minutes from the trace's day start:
`booked_minute,start_minute,duration_minutes,cpu_cores,memory_gb,storage_gb,node_count,ports,license`
(`license` empty = any; `#` lines are comments).

- `generate_trace` (the ordinary day, seed 7): bookings of three lab definitions starting 07:00–19:00, busiest
  around midday, mostly booked hours ahead, one in ten a walk-in booked under 30 minutes ahead.
- `generate_exam_day` (the exam day, seed 11): cohorts of 30–120 candidates at fixed times (08:00, 09:30, 11:00,
  13:30, 15:00, 16:30), every candidate of a cohort on the same exam lab (4 CPU, 8 GB, 20 GB disk, 6 nodes, 120
  minutes), booked the day before (minute 0 here); plus walk-ins all day: the day's three lab definitions, each
  booked 0–30 minutes before its start, 07:00–19:00.
"""

import csv
import random
from dataclasses import dataclass

from scheduling.capacity import Demand

COLUMNS = (
    "booked_minute", "start_minute", "duration_minutes", "cpu_cores", "memory_gb", "storage_gb", "node_count",
    "ports", "license",
)  # fmt: skip

# Lab definitions of the synthetic day: (weight, cpu, memory GB, storage GB, nodes, ports, minutes). A booking
# without an end lasts its definition's `max_duration_minutes` (SPEC §5.1), so each definition has its length.
PROFILES = ((0.6, 2, 4, 10, 3, 3, 60), (0.3, 4, 8, 20, 6, 5, 90), (0.1, 8, 16, 40, 12, 8, 120))
# The exam day: cohort start times (minutes from 00:00) and the exam lab (cpu, memory, storage, nodes, ports, minutes).
EXAM_TIMES = (8 * 60, 9 * 60 + 30, 11 * 60, 13 * 60 + 30, 15 * 60, 16 * 60 + 30)
EXAM_LAB = (4, 8, 20, 6, 5, 120)


@dataclass(frozen=True)
class Booking:
    booked: int  # minutes from the trace's origin
    start: int
    duration: int
    demand: Demand

    @property
    def end(self) -> int:
        return self.start + self.duration


def read_trace(path) -> list[Booking]:
    """The bookings of a trace file; raises ValueError naming the bad line."""
    bookings = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].lstrip().startswith("#"):
                continue
            if row[0].strip() == COLUMNS[0]:
                continue  # header
            try:
                booked, start, duration, cpu, memory, storage, nodes, ports = (int(v) for v in row[:8])
                licence = row[8].strip().upper() if len(row) > 8 else ""
            except (ValueError, IndexError):
                raise ValueError(f"line {number}: expected {','.join(COLUMNS)}") from None
            if duration <= 0 or booked > start or min(cpu, memory, storage, nodes, ports) < 0:
                raise ValueError(f"line {number}: needs duration > 0, booked ≤ start and no negative demand")
            demand = Demand(cpu, memory, storage, nodes, ports, (licence,) if licence else ())
            bookings.append(Booking(booked, start, duration, demand))
    if not bookings:
        raise ValueError("the trace holds no bookings")
    return bookings


def _profile(rng: random.Random) -> tuple:
    pick = rng.random()
    for candidate in PROFILES:
        pick -= candidate[0]
        if pick <= 0:
            return candidate
    return PROFILES[-1]


def _walk_in(rng: random.Random) -> Booking:
    start = rng.randint(7 * 12, 19 * 12) * 5
    _, cpu, memory, storage, nodes, ports, duration = _profile(rng)
    return Booking(start - rng.randint(0, 30), start, duration, Demand(cpu, memory, storage, nodes, ports))


def generate_trace(path, *, sessions: int = 400, seed: int = 7) -> list[Booking]:
    """Write a synthetic day: bookings of three lab definitions (60% small 60-minute labs, 30% medium 90-minute,
    10% large 120-minute) starting 07:00–19:00 on a 5-minute grid, busiest around midday, mostly booked hours
    ahead, one in ten a walk-in booked under 30 minutes ahead."""
    rng = random.Random(seed)
    bookings = []
    for _ in range(sessions):
        start = min(19 * 60, max(7 * 60, int(rng.gauss(12.5 * 60, 2.6 * 60))))
        start -= start % 5
        walk_in = rng.random() < 0.1
        lead = rng.randint(0, 30) if walk_in else min(start, 35 + int(rng.expovariate(1 / 360)))
        _, cpu, memory, storage, nodes, ports, duration = _profile(rng)
        bookings.append(Booking(start - lead, start, duration, Demand(cpu, memory, storage, nodes, ports)))
    title = f"a synthetic day of {sessions} sessions (seed {seed})"
    return _write(path, bookings, title)


def generate_exam_day(path, *, walk_ins: int = 120, seed: int = 11) -> list[Booking]:
    """Write an exam day: a cohort of 30–120 candidates at each of `EXAM_TIMES` on `EXAM_LAB`, booked the day
    before (minute 0), plus `walk_ins` walk-ins of the day's lab definitions (booked 0–30 minutes ahead)."""
    rng = random.Random(seed)
    cpu, memory, storage, nodes, ports, duration = EXAM_LAB
    exam = Demand(cpu, memory, storage, nodes, ports)
    bookings = [Booking(0, start, duration, exam) for start in EXAM_TIMES for _ in range(rng.randint(30, 120))]
    bookings.extend(_walk_in(rng) for _ in range(walk_ins))
    cohorts = len(bookings) - walk_ins
    title = f"an exam day: {cohorts} candidates in {len(EXAM_TIMES)} cohorts plus {walk_ins} walk-ins (seed {seed})"
    return _write(path, bookings, title)


def _write(path, bookings: list[Booking], title: str) -> list[Booking]:
    bookings.sort(key=lambda b: (b.booked, b.start))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(f"# LCM booking trace: {title}; minutes from 00:00\n")
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for b in bookings:
            d = b.demand
            row = [b.booked, b.start, b.duration, d.cpu_cores, d.memory_gb, d.storage_gb, d.node_count, d.ports, ""]
            writer.writerow(row)
    return bookings
