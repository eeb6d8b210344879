"""Server-rendered SVG charts (SPEC §11): the geometry of bar and line charts, drawn by the templates
(`templates/includes/dashboard_charts.html`, the reports page) as inline `<svg>`: no script, no CDN.

A chart is a plain dict of numbers in the SVG's own coordinate space (a `viewBox` of `width` x `height`), so
a template only places what is computed here; every bar and point keeps its value and label, which the
templates write into `<title>` and `data-*` attributes (what a person hovers, what a test checks).
"""

from dataclasses import dataclass

WIDTH = 720
HEIGHT = 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 40, 10, 10, 24


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: float
    label: str
    series: str


def _whole_step(value: float) -> int:
    """The smallest of 1, 2, 5 x 10^n at or above `value` (at least 1): a whole-number axis step."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def _frame(y_max: float, *, percent: bool = False) -> dict:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    ticks = []
    for i in range(5):
        value = y_max * i / 4
        text = f"{value * 100:.0f}%" if percent else (f"{value:g}" if value != int(value) else f"{int(value)}")
        ticks.append({"y": round(PAD_TOP + plot_h - plot_h * i / 4, 1), "text": text})
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": PAD_LEFT,
        "right": WIDTH - PAD_RIGHT,
        "top": PAD_TOP,
        "bottom": HEIGHT - PAD_BOTTOM,
        "y_ticks": ticks,
    }


def bar_chart(labels: list[str], series: dict[str, list[float]], *, every: int = 1) -> dict:
    """Grouped bars: one group per label, one bar per series in it (`{name: values}`, one value per label).

    `every`: label every n-th group on the x axis (24 hours do not fit one label each)."""
    peak = max((v for values in series.values() for v in values), default=0)
    y_max = 4 * _whole_step(peak / 4)  # counts: four whole-number steps
    chart = _frame(y_max)
    plot_w = chart["right"] - chart["left"]
    plot_h = chart["bottom"] - chart["top"]
    group_w = plot_w / max(1, len(labels))
    bar_w = group_w * 0.8 / max(1, len(series))
    bars, x_labels = [], []
    for i, label in enumerate(labels):
        left = chart["left"] + i * group_w + group_w * 0.1
        for j, (name, values) in enumerate(series.items()):
            value = values[i]
            height = plot_h * value / y_max
            bars.append(
                Bar(
                    round(left + j * bar_w, 1),
                    round(chart["bottom"] - height, 1),
                    round(bar_w, 1),
                    round(height, 1),
                    value,
                    label,
                    name,
                )  # fmt: skip
            )
        if i % every == 0:
            x_labels.append({"x": round(left + group_w * 0.4, 1), "text": label})
    chart.update(bars=bars, x_labels=x_labels, series=list(series), totals={n: sum(v) for n, v in series.items()})
    return chart


def line_chart(points: list[tuple[float, float]], *, x_labels: list[tuple[float, str]], y_max: float = 1.0) -> dict:
    """A line over `points` `(x in [0, 1], y in [0, y_max])`, with `x_labels` `(x in [0, 1], text)`; percent axis."""
    chart = _frame(y_max, percent=True)
    plot_w = chart["right"] - chart["left"]
    plot_h = chart["bottom"] - chart["top"]

    def place(x: float, y: float) -> tuple[float, float]:
        return round(chart["left"] + plot_w * x, 1), round(chart["bottom"] - plot_h * min(y, y_max) / y_max, 1)

    placed = [place(x, y) for x, y in points]
    chart["points"] = [{"x": px, "y": py, "value": y} for (px, py), (_x, y) in zip(placed, points, strict=True)]
    chart["polyline"] = " ".join(f"{px},{py}" for px, py in placed)
    chart["x_labels"] = [{"x": place(x, 0)[0], "text": text} for x, text in x_labels]
    return chart
