"""A study's outputs: comparison.csv/.json (one row per run), REPORT.md (mean ± std over seeds) and the plots."""

from __future__ import annotations

import csv
import json
import math
import os
import shlex

from .. import plots
from ..errors import EttinError
from ..registry import SHAPES
from ..seeds import mean_std
from .plan import PROBES, StudyConfig, folder_label

# The metric plotted and summarised unless --metric says otherwise: the first one a run reports.
PRIMARY_METRICS = {
    "classify": ("accuracy", "pearson"),
    "tag": ("f1",),
    "dense": ("ndcg@10", "nanobeir_ndcg@10", "held_out_ndcg@10"),
    "colbert": ("ndcg@10", "nanobeir_ndcg@10", "held_out_ndcg@10"),
    "sparse": ("ndcg@10", "nanobeir_ndcg@10", "held_out_ndcg@10"),
    "rerank": ("ndcg@10", "nanobeir_ndcg@10", "held_out_ndcg@10"),
    "sft": ("held_out_loss",),
    "bias": ("preference_neutral",),
    "zeroshot": ("acc_norm",),  # the macro-average over tasks
}

# A row's columns that describe the run; every other column is a metric.
RUN_COLUMNS = ("model", "arch", "variant", "size", "parameters", "revision", "step", "seed", "status", "reused",
               "wall_s", "error", "folder")

PLOTS = {"metric_vs_size.png": "the metric against model size, one line per architecture",
         "metric_vs_step.png": "the metric against the pretraining step, one line per model",
         "encoder_minus_decoder.png": "encoder minus decoder, per size (and checkpoint)"}



def primary_metric(rows: list[dict], config: StudyConfig) -> str | None:
    """The column the report leads with and the plots show (after_<m>, or the probe's own name)."""
    columns = {k for row in rows for k in row if k not in RUN_COLUMNS and not k.startswith("before_")}
    candidates = [config.metric] if config.metric else list(PRIMARY_METRICS[config.recipe])
    for name in candidates:
        for column in (f"after_{name}", name):
            if column in columns:
                return column
    if config.metric:
        raise EttinError(f"--metric {config.metric}: no run reported it; reported: "
                         f"{', '.join(sorted(c.removeprefix('after_') for c in columns)) or 'nothing'}")
    return min(columns) if columns else None



def aggregate(rows: list[dict]) -> list[dict]:
    """One group per (model, revision): every metric's mean and std over the seeds that finished."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["revision"]), []).append(row)
    summary = []
    for (model, revision), members in groups.items():
        ok = [r for r in members if r["status"] == "ok"]
        metrics = sorted({k for r in ok for k in r if k not in RUN_COLUMNS})
        values = {m: mean_std([r[m] for r in ok if isinstance(r.get(m), (int, float)) and not math.isnan(r[m])])
                  for m in metrics if any(isinstance(r.get(m), (int, float)) for r in ok)}
        first = members[0]
        summary.append({"model": model, "revision": revision, "step": first["step"], "arch": first["arch"],
                        "variant": first["variant"], "size": first["size"], "parameters": first["parameters"],
                        "runs": len(members), "ok": len(ok), "metrics": values})
    return summary



def write_table(rows: list[dict], output_dir: str) -> None:
    columns = list(RUN_COLUMNS)
    columns += sorted({k for row in rows for k in row} - set(columns))
    with open(os.path.join(output_dir, "comparison.csv"), "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(output_dir, "comparison.json"), "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=2)



def latest(groups: list[dict]) -> list[dict]:
    """Each model's last revision (the highest step; final/ or the only one otherwise)."""
    by_model: dict[str, dict] = {}
    for group in groups:
        current = by_model.get(group["model"])
        if current is None or (group["revision"] == "final") or (
                current["revision"] != "final" and (group["step"] or -1) > (current["step"] or -1)):
            by_model[group["model"]] = group
    return list(by_model.values())



def encoder_decoder_pairs(groups: list[dict], metric: str) -> list[tuple[str, float]]:
    """(size[@revision], encoder − decoder) wherever an encoder and a decoder of one size share a revision."""
    sides: dict[tuple, dict[str, float]] = {}
    for group in groups:
        if metric in group["metrics"] and group["size"] and group["variant"] in ("encoder", "decoder"):
            sides.setdefault((group["size"], group["step"], group["revision"]), {})[group["variant"]] = group["metrics"][metric][0]
    multiple = len({key[2] for key in sides}) > 1
    order = sorted(sides, key=lambda key: (list(SHAPES).index(key[0]) if key[0] in SHAPES else 99, key[1] or 0))
    return [(f"{size}@{revision}" if multiple and revision else size, values["encoder"] - values["decoder"])
            for size, _, revision in order if len(values := sides[(size, _, revision)]) == 2]



def plot_study(groups: list[dict], metric: str, output_dir: str) -> dict[str, str]:
    """The three plots; returns file → why it was not drawn, for those it could not draw."""
    name = metric.removeprefix("after_")
    skipped = {}

    def line(members: list[dict], x: str) -> list[tuple[float, float, float]]:
        return [(g[x], *g["metrics"][metric]) for g in members]

    points = [g for g in latest(groups) if metric in g["metrics"] and g["parameters"]]
    if points:
        plots.lines_with_spread(os.path.join(output_dir, "metric_vs_size.png"),
                                {v: line([g for g in points if g["variant"] == v], "parameters")
                                 for v in sorted({g["variant"] for g in points})},
                                "parameters", name, f"{name} against model size", log_x=True)
    else:
        skipped["metric_vs_size.png"] = "no finished run reported the metric"
    stepped = [g for g in groups if metric in g["metrics"] and g["step"] is not None]
    models = sorted({g["model"] for g in stepped})
    if stepped and any(len({g["step"] for g in stepped if g["model"] == m}) > 1 for m in models):
        plots.lines_with_spread(os.path.join(output_dir, "metric_vs_step.png"),
                                {folder_label(m): line([g for g in stepped if g["model"] == m], "step") for m in models},
                                "pretraining step", name, f"{name} against the pretraining checkpoint")
    else:
        skipped["metric_vs_step.png"] = "no model was run at more than one checkpoint step (--revisions)"
    pairs = encoder_decoder_pairs(groups, metric)
    if pairs:
        plots.signed_bars(os.path.join(output_dir, "encoder_minus_decoder.png"), pairs, f"encoder − decoder {name}",
                          "encoder minus decoder of the same size")
    else:
        skipped["encoder_minus_decoder.png"] = "no encoder and decoder of one size finished at the same revision"
    return skipped


def cell(values: tuple[float, float] | None, runs: int) -> str:
    if values is None:
        return "–"
    mean, std = values
    return f"{mean:.4f} ± {std:.4f}" if runs > 1 else f"{mean:.4f}"



def write_study_report(rows: list[dict], config: StudyConfig, recipe_args: list[str]) -> None:
    groups = aggregate(rows)
    metric = primary_metric(rows, config)
    skipped = plot_study(groups, metric, config.output_dir) if metric else dict.fromkeys(PLOTS, "no metric was reported")
    after = sorted({m for g in groups for m in g["metrics"] if m != metric and not m.startswith("before_")})
    name = (metric or "").removeprefix("after_")
    lines = [f"# {config.recipe}: {len(rows)} runs, {sum(r['status'] == 'ok' for r in rows)} finished", "",
             f"Recipe arguments: `{shlex.join(recipe_args) or '(none)'}`; seeds: {config.seeds if config.recipe not in PROBES else '-'}. "
             f"Values are the mean ± std over seeds.", ""]
    head = ["model", "variant", "size", "revision", "ok/runs"]
    if metric and metric.startswith("after_"):
        head += [f"before {name}", f"**{name}**"]
    elif metric:
        head += [f"**{name}**"]
    head += [m.removeprefix("after_") for m in after]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [folder_label(g["model"]), g["variant"] or "?", g["size"] or "?", g["revision"] or "-", f"{g['ok']}/{g['runs']}"]
        if metric and metric.startswith("after_"):
            cells.append(cell(g["metrics"].get("before_" + name), g["ok"]))
        if metric:
            cells.append(cell(g["metrics"].get(metric), g["ok"]))
        cells += [cell(g["metrics"].get(m), g["ok"]) for m in after]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- {r['folder']}: {r['error']}" for r in failed]
    lines += ["", "## Plots", ""]
    for file, title in PLOTS.items():
        lines.append(f"- not drawn: {title} ({skipped[file]})" if file in skipped else f"![{title}]({file})")
    with open(os.path.join(config.output_dir, "REPORT.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
