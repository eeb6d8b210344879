"""Class statistics of a set of score reports (SPEC §11, the reports page): the mean score, the distribution of
scores (ten 10 % bins) and each section's difficulty (its mean score and pass rate, hardest first).

Computed over every report the page's filters match (not only the page shown), in three queries; scores are
percentages of each report's (section's) maximum, so reports of different definitions compare.
"""

from django.db.models import Avg, Count, ExpressionWrapper, F, FloatField, Q

from grading.models import ScoreSection
from lcm.charts import bar_chart

BINS = 10


def _percent():
    return ExpressionWrapper(F("score") * 100.0 / F("max_score"), output_field=FloatField())


def class_statistics(reports) -> dict:
    """`{count, mean, passed, pass_rate, histogram (lcm.charts bar chart), sections: [...]}` of `reports`."""
    scored = reports.filter(max_score__gt=0).order_by()
    summary = scored.aggregate(count=Count("id"), mean=Avg(_percent()), passed=Count("id", filter=Q(passed=True)))
    bins = [0] * BINS
    for percent in scored.annotate(percent=_percent()).values_list("percent", flat=True):
        bins[min(BINS - 1, max(0, int(percent // (100 / BINS))))] += 1
    labels = [f"{i * 100 // BINS}–{(i + 1) * 100 // BINS}%" for i in range(BINS)]
    sections = (
        ScoreSection.objects.filter(report__in=scored.values("pk"), max_score__gt=0)
        .values("name")
        .annotate(
            reports=Count("id"),
            mean=Avg(_percent()),
            judged=Count("id", filter=Q(passed__isnull=False)),
            passed=Count("id", filter=Q(passed=True)),
        )
        .order_by("mean", "name")
    )
    rows = [
        {**row, "pass_rate": row["passed"] / row["judged"] if row["judged"] else None, "mean": row["mean"] or 0.0}
        for row in sections[:50]
    ]
    return {
        "count": summary["count"],
        "mean": summary["mean"],
        "passed": summary["passed"],
        "pass_rate": summary["passed"] / summary["count"] if summary["count"] else None,
        "histogram": bar_chart(labels, {"count": bins}, every=1),
        "sections": rows,
    }
