"""The figures of a comparison as a terminal table, JSON, CSV and (with matplotlib) a PNG."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mes.simulation import kpi
from mes.simulation.state import TIME_SPLIT


def table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Per rule set: cost, throughput, WIP, then one line per lot type."""
    lines = [
        f"{'rule set':<14}{'lot type':<16}{'done':>7}{'CT mean':>9}{'CT p90':>8}{'X':>6}"
        f"{'on time':>9}{'tardy d':>9}"
    ]
    for name, s in summaries.items():
        lines.append(
            f"{name:<14}cost {s['weighted_cost']}, throughput {s['throughput_lots_per_day']}/day, "
            f"WIP mean {s['wip_mean']}, trend {_trend(s['wip_trend_lots_per_day'])} lots/day, "
            f"decisions {s['speed']['decisions']}, "
            f"{s['speed']['sim_days_per_cpu_s']} sim days/CPU s"
        )
        for t in s["lot_types"]:
            lines.append(
                f"{'':<14}{t['lot_type']:<16}{t['completed']:>7}{_f(t['ct_mean_days']):>9}"
                f"{_f(t['ct_p90_days']):>8}{_f(t['flow_factor']):>6}{_f(t['on_time_pct']):>9}"
                f"{_f(t['tardiness_mean_days']):>9}"
            )
    lines.append("")
    lines.append(
        "where the cycle time goes (days per lot): queue / in tool / transport / delay; "
        "longest queues"
    )
    for name, s in summaries.items():
        for t in s["lot_types"]:
            if not t["completed"]:
                continue
            split = " / ".join(_f(t[f"{k}_days"]) for k in TIME_SPLIT)
            waits = ", ".join(f"{w['family']} {w['queue_days']:.2f}" for w in t["longest_waits"])
            lines.append(f"{name:<14}{t['lot_type']:<16}{split}; {waits}")
    return "\n".join(lines)


def _trend(slopes: list[float | None]) -> str:
    return "/".join("-" if x is None else f"{x:+.1f}" for x in slopes)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def write_json(path: Path, summaries: Mapping[str, Mapping[str, Any]]) -> None:
    path.write_text(json.dumps(summaries, indent=1, sort_keys=True), "utf-8")


def write_csv(path: Path, summaries: Mapping[str, Mapping[str, Any]]) -> None:
    """Every figure as one row: rule set, section, key, figure, value."""
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["rules", "section", "key", "figure", "value"])
        for name, s in summaries.items():
            for figure in ("weighted_cost", "throughput_lots_per_day", "wip_mean"):
                out.writerow([name, "fab", "", figure, s[figure]])
            for seed, slope in zip(s["seeds"], s["wip_trend_lots_per_day"], strict=True):
                out.writerow([name, "fab", f"seed {seed}", "wip_trend_lots_per_day", slope])
            for k, v in s["speed"].items():
                out.writerow([name, "speed", "", k, v])
            for t in s["lot_types"]:
                for k, v in t.items():
                    if k not in ("lot_type", "longest_waits"):
                        out.writerow([name, "lot_type", t["lot_type"], k, v])
                for w in t["longest_waits"]:
                    key = f"{t['lot_type']} at {w['family']}"
                    out.writerow([name, "lot_type_wait", key, "queue_days", w["queue_days"]])
            for fam in s["families"]:
                for k, v in fam.items():
                    if k != "family":
                        out.writerow([name, "family", fam["family"], k, v])
            for seed, series in zip(s["seeds"], s["wip"], strict=True):
                for day, n in series:
                    out.writerow([name, "wip", f"seed {seed} day {day:.2f}", "lots", n])


def write_plot(
    path: Path,
    summaries: Mapping[str, Mapping[str, Any]],
    cycle_times: Mapping[str, Mapping[str, list[float]]],
) -> bool:
    """WIP over time and the cycle-time distribution per rule set (False: no matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (wip_ax, ct_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, s in summaries.items():
        series = s["wip"][0] if s["wip"] else []
        wip_ax.plot([d for d, _ in series], [n for _, n in series], label=f"{name} (seed 1)")
    wip_ax.set(title="WIP over time", xlabel="day", ylabel="lots in the fab")
    wip_ax.legend()
    labels, data = [], []
    for name, by_type in cycle_times.items():
        for lot_type, values in sorted(by_type.items()):
            if values:
                labels.append(f"{name}\n{lot_type}")
                data.append(values)
    if data:
        ct_ax.boxplot(data, showfliers=False)
        ct_ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=7)
    ct_ax.set(title="cycle time per lot type", ylabel="days")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(
    folder: Path, results: Mapping[str, list[kpi.RunResult]]
) -> tuple[dict[str, Any], list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    summaries = {name: kpi.summarize(runs) for name, runs in results.items()}
    written = [folder / "results.json", folder / "results.csv"]
    write_json(written[0], summaries)
    write_csv(written[1], summaries)
    plot = folder / "results.png"
    if write_plot(plot, summaries, {n: kpi.cycle_times(r) for n, r in results.items()}):
        written.append(plot)
    return summaries, written
