"""The fleet benchmark's HTML report: an accuracy heatmap, per-round curves and the goals, in one file."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

# Goals from issue #12, on generalize skills and seed means; the report marks each as met or not.
GOALS = (
    ("absorption_kd_only", ">=", 0.95, "mean over skills of KD-only core / specialist: learned from the agents"),
    ("absorption_kd_only_min", ">=", 0.90, "worst skill's KD-only core / specialist"),
    ("forgetting", "<=", 0.02, "largest drop of an earlier skill in later rounds"),
    ("core_minus_best_merge", ">=", 0.10, "core mean accuracy minus the best merging baseline's"),
    ("core_minus_multitask", ">=", -0.03, "core mean accuracy minus multitask's, at a matched budget"),
    ("kd_gap", "<=", 0.01, "full-vocabulary KD minus top-k KD, mean accuracy"),
)


def goal_rows(report: dict[str, Any]) -> list[tuple[str, str, float | None, bool | None, str]]:
    values = dict(report)
    values["kd_gap"] = report.get("kd_compare", {}).get("gap_topk_vs_full")
    rows = []
    for key, op, limit, meaning in GOALS:
        value = values.get(key)
        met = None if value is None else (value >= limit if op == ">=" else value <= limit)
        rows.append((key, f"{op} {limit}", value, met, meaning))
    return rows


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _figures(report: dict[str, Any]) -> tuple[str, str]:
    # matplotlib comes with the hive's extras; import it only when a report is drawn.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skills, methods = report["skills"], report["methods"]
    sds = report.get("accuracy_sd", {})
    grid = [[report["accuracy"][m].get(s, 0.0) for s in skills] for m in methods]
    fig, ax = plt.subplots(figsize=(1.4 * len(skills) + 2.5, 0.5 * len(methods) + 1.5))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(skills)), skills)
    ax.set_yticks(range(len(methods)), methods)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            sd = sds.get(methods[i], {}).get(skills[j])
            label = f"{value:.2f}" if sd is None else f"{value:.2f}\n±{sd:.2f}"
            ax.text(j, i, label, ha="center", va="center", fontsize=8, color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="held-out accuracy (seed mean ± sd)")
    ax.set_title("accuracy by method and skill")
    heatmap = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    rounds = report["rounds"]
    for skill in skills:
        taught = [r for r in rounds if skill in r["eval"]]
        errors = [r.get("eval_sd", {}).get(skill, 0.0) for r in taught]
        xs, ys = [r["round"] for r in taught], [r["eval"][skill] for r in taught]
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=skill)
    ax.set_xticks([r["round"] for r in rounds])
    ax.set_xlabel("round")
    ax.set_ylabel("core accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("the core after each round (continual arrival of skills)")
    curves = _png(fig)
    plt.close(fig)
    return heatmap, curves


def render_html(report: dict[str, Any]) -> str:
    heatmap, curves = _figures(report)
    esc = html.escape
    goal_html = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(target)}</td><td>{'' if v is None else f'{v:.3f}'}</td>"
        f"<td class={'met' if met else 'missed'}>{'n/a' if met is None else ('met' if met else 'missed')}</td>"
        f"<td>{esc(meaning)}</td></tr>"
        for k, target, v, met, meaning in goal_rows(report)
    )
    sds = report.get("accuracy_sd", {})

    def cell(method: str, skill: str) -> str:
        value, sd = report["accuracy"][method].get(skill, 0.0), sds.get(method, {}).get(skill)
        return f"<td>{value:.2f}</td>" if sd is None else f"<td>{value:.2f} ± {sd:.2f}</td>"

    acc_rows = "".join(
        f"<tr><th>{esc(m)}</th>"
        + "".join(cell(m, s) for s in report["skills"])
        + f"<td>{report['mean_accuracy'][m]:.3f}</td></tr>"
        for m in report["methods"]
    )
    kinds = report.get("split", {})
    head = "".join(f"<th>{esc(s)}<br><small>{esc(kinds.get(s, ''))}</small></th>" for s in report["skills"])
    seeds = report.get("seeds", [])
    wall = ", ".join(f"{esc(k)} {v} s" for k, v in report["wall_s"].items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hive bench fleet</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}.met{{color:#080}}.missed{{color:#b00}}</style>
</head><body>
<h1>hive bench fleet</h1>
<p>{esc(report["date"])} &middot; {esc(report["machine"]["platform"])} &middot; wall: {wall}</p>
<h2>Goals</h2><table><tr><th>figure</th><th>goal</th><th>measured</th><th></th><th>meaning</th></tr>{goal_html}</table>
<h2>Accuracy on held-out tasks</h2>
<p>Mean ± sample sd over {len(seeds) or 1} seed(s) {esc(str(seeds))}. <code>generalize</code> skills are scored on
test prompts that no training stream holds; <code>recall</code> skills on their table.</p>
<table><tr><th>method</th>{head}<th>mean</th></tr>{acc_rows}</table>
<p><img alt="accuracy heatmap" src="data:image/png;base64,{heatmap}"></p>
<h2>Rounds</h2>
<p><img alt="per-round curves" src="data:image/png;base64,{curves}"></p>
</body></html>
"""
