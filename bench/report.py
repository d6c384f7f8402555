"""latest.md (tables and ratios) and latest.png (one bar chart per scenario)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.core import Figure, Scenario, Sizes


def markdown(scenarios: list[Scenario], figures: list[Figure], machine: dict[str, str],
             sizes: Sizes, size_name: str, seconds: float,
             failed: dict[str, str] | None = None) -> str:
    lines = [
        "# taskworks benchmarks: latest run", "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, size `{size_name}` "
        f"(drain {sizes.drain_tasks:,} tasks, enqueue {sizes.enqueue_tasks:,} messages, "
        f"latency {sizes.latency_iterations:,} iterations), {sizes.runs} runs per figure "
        f"after a warm-up, in {seconds / 60:.1f} min. Every figure is the median of the "
        "runs. All sides ran against one embedded Valkey, in this one run.", "",
        "## Machine", "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in machine.items()]
    lines.append("")
    if failed:
        lines += ["## Failed scenarios", ""]
        lines += [f"- **{name}**: {error}" for name, error in failed.items()]
        lines.append("")
    all_ratios = [(s, r) for s in scenarios for r in s.ratios]
    if all_ratios:
        lines += ["## Targets", "", "| ratio | measured | target | met |", "|---|---:|---:|:---:|"]
        for _, ratio in all_ratios:
            value = ratio.value(figures)
            shown = "n/a" if value is None else f"{value:.2f}"
            sign = ">=" if ratio.higher_is_better else "<="
            met = ratio.met(figures)
            mark = "n/a" if met is None else ("yes" if met else "**no**")
            lines.append(f"| {ratio.name} | {shown} | {sign} {ratio.target:g} | {mark} |")
        lines.append("")
    for scenario in scenarios:
        mine = [f for f in figures if f.scenario == scenario.name]
        if not mine:
            continue
        lines += [f"## {scenario.title}", "", scenario.measures, ""]
        lines.append("| side | " + " | ".join(c.title for c in scenario.columns) + " |")
        lines.append("|---|" + "---:|" * len(scenario.columns))
        for figure in mine:
            cells = []
            for column in scenario.columns:
                value = figure.median(column.metric)
                cells.append("n/a" if value is None else column.fmt.format(value))
            lines.append(f"| {figure.side} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("![chart](latest.png)")
    return "\n".join(lines) + "\n"


def chart(scenarios: list[Scenario], figures: list[Figure], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    shown = [s for s in scenarios
             if s.chart_metric and any(f.scenario == s.name for f in figures)]
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 3.2 * max(1, len(shown))),
                             squeeze=False)
    for ax, scenario in zip(axes[:, 0], shown, strict=True):
        mine = [f for f in figures if f.scenario == scenario.name]
        names = [f.side for f in mine]
        values = [f.median(scenario.chart_metric) or 0.0 for f in mine]
        colors = ["#d62728" if n.startswith("taskworks") and "off" not in n else "#7f7f7f"
                  for n in names]
        ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_xscale("log")  # a floor 100x faster would flatten every other bar
            ax.set_title(scenario.chart_label + ", log scale", fontsize=10)
        else:
            ax.set_title(scenario.chart_label, fontsize=10)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:,.1f}" if value < 100 else f" {value:,.0f}",
                    va="center", fontsize=8)
        ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def raw(figures: list[Figure], machine: dict[str, str], sizes: Sizes) -> str:
    data: dict[str, Any] = {"machine": machine, "sizes": asdict(sizes),
                            "figures": [asdict(f) for f in figures]}
    return json.dumps(data, indent=1)
