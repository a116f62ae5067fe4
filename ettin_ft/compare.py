"""Paired studies: one recipe over encoders and decoders, sizes, training checkpoints and seeds, into one table.

Each run is an ordinary recipe run in its own folder and process (DIR/<model>@<revision>/seed-<n>/), so one
failure cannot take the study down; finished runs are kept on a rerun. Everything after ``--`` goes to the
recipe unchanged. Writes DIR/comparison.csv and .json (one row per run), DIR/REPORT.md (mean ± std over seeds)
and plots: the metric against model size (one line per architecture), against the pretraining step (with
--revisions) and the encoder-minus-decoder difference per size.

    python -m ettin_ft.compare --recipe classify --models encoder-17m,decoder-17m,enc-from-dec-17m \
        --seeds 0,1,2 --output-dir runs/cmp -- --task sst2
    python -m ettin_ft.compare --recipe dense --sizes 17m,32m --archs encoder,decoder --output-dir runs/cmp-dense
    python -m ettin_ft.compare --recipe classify --models runs/pretrain-enc,runs/pretrain-dec --revisions all \
        --output-dir runs/dynamics -- --data ../shared/data/classification/sst2
    python -m ettin_ft.compare --recipe bias --models encoder-150m,decoder-150m --output-dir runs/bias \
        -- --data ../shared/data/bias/winogender
    python -m ettin_ft.compare --recipe zeroshot --sizes 17m,32m --output-dir runs/zs -- --data ../shared/data/zeroshot
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

from .config import parse_config
from .errors import EttinError, cli_entry
from .folders import CHECKPOINT, complete_checkpoints
from .registry import SHAPES, VARIANTS, resolve

RECIPES = ("dense", "colbert", "sparse", "rerank", "classify", "sft", "bias", "zeroshot")
# Recipes that score a model as it is: one run per model and revision, no seeds, no final/.
PROBES = ("bias", "zeroshot")
# The metric plotted and summarised unless --metric says otherwise: the first one a run reports.
PRIMARY_METRICS = {
    "classify": ("accuracy", "pearson"),
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


@dataclass
class StudyConfig:
    recipe: str | None = field(default=None, metadata={"help": f"what every run does: {', '.join(RECIPES)}"})
    models: str | None = field(default=None, metadata={"help": "comma-separated short names, hub ids or folders (a pretraining run folder gives its checkpoints); in a --config file also a list whose entries may be {name: M, args: [...]} for per-model recipe arguments"})
    sizes: str | None = field(default=None, metadata={"help": "with --archs instead of --models: e.g. '17m,32m' expands to encoder-17m, decoder-17m, ..."})
    archs: str = field(default="encoder,decoder", metadata={"help": f"variants --sizes expands to: {', '.join(VARIANTS)}"})
    revisions: str | None = field(default=None, metadata={"help": "hub revisions (step10000,ext5000,...), a pretraining run's checkpoint folders or steps (checkpoint-200 or 200, final), or 'all' (every checkpoint of a run folder plus final/; every tag of a hub model)"})
    seeds: str = field(default="0", metadata={"help": "one run per seed, e.g. '0,1,2' (bias and zeroshot run once per model)"})
    output_dir: str = field(default="runs/compare", metadata={"help": "study folder: runs, logs/, comparison.csv/.json, REPORT.md, plots"})
    metric: str | None = field(default=None, metadata={"help": "metric for REPORT.md's headline and the plots (default: the recipe's main one, e.g. accuracy, ndcg@10)"})
    launcher: str | None = field(default=None, metadata={"help": "command that starts each run instead of this Python, e.g. 'accelerate launch --num_processes 2'"})
    recipe_args: str | None = field(default=None, metadata={"help": "arguments for every run (in a --config file; on the command line put them after --)"})


@dataclass
class Run:
    model: str  # as given
    label: str  # folder-safe name
    spec: str  # what the recipe's --model gets
    revision: str | None
    step: int | None
    seed: int | None  # None: a probe (no training)
    folder: str
    extra_args: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # arch, variant, size, parameters


# ------------------------------------------------------------------------------------------------ the plan


def split_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """(study flags, recipe arguments): everything after the first ``--`` belongs to the recipe."""
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1:]
    return argv, []


def as_list(value, what: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        return value
    raise EttinError(f"{what}: expected a comma-separated string or a list, found {type(value).__name__}")


def model_entries(config: StudyConfig) -> list[tuple[str, list[str]]]:
    """(model, its own extra recipe arguments) from --models or --sizes × --archs."""
    if config.models and config.sizes:
        raise EttinError("give --models or --sizes (with --archs), not both")
    if config.sizes:
        archs = as_list(config.archs, "--archs")
        unknown = [a for a in archs if a not in VARIANTS]
        if unknown:
            raise EttinError(f"--archs {', '.join(unknown)}: expected {', '.join(VARIANTS)}")
        return [(f"{arch}-{size}", []) for size in as_list(config.sizes, "--sizes") for arch in archs]
    entries = []
    for entry in as_list(config.models, "--models"):
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            args = entry.get("args") or []
            entries.append((entry["name"], shlex.split(args) if isinstance(args, str) else [str(a) for a in args]))
        elif isinstance(entry, str):
            entries.append((entry, []))
        else:
            raise EttinError(f"--models entry {entry!r}: expected a model name or {{name: MODEL, args: [...]}}")
    if not entries:
        raise EttinError("--models (or --sizes) is required: e.g. --models encoder-17m,decoder-17m")
    return entries


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in as_list(str(text), "--seeds")]
    except ValueError:
        raise EttinError(f"--seeds {text!r}: expected integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise EttinError(f"--seeds {text!r}: expected distinct integers, e.g. 0,1,2")
    return seeds


def run_folder_revisions(folder: str) -> dict[str, tuple[str, int | None]]:
    """A pretraining run folder's models: revision → (path, step), checkpoints in step order, then final."""
    found = sorted((int(m.group(1)), name) for name in os.listdir(folder)
                   if (m := CHECKPOINT.match(name)) and os.path.isfile(os.path.join(folder, name, "config.json")))
    revisions = {name: (os.path.join(folder, name), step) for step, name in found}
    if os.path.isfile(os.path.join(folder, "final", "config.json")):
        revisions["final"] = (os.path.join(folder, "final"), final_step(folder))
    return revisions


def final_step(folder: str) -> int | None:
    """The step a pretraining run ended at (its metrics.json), if it says."""
    try:
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as handle:
            return int(json.load(handle)["train"]["steps"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def step_of(revision: str | None) -> int | None:
    """The training step in a hub revision's name (step10000, ext5000, decay1000), if any."""
    digits = re.findall(r"\d+", revision or "")
    return int(digits[-1]) if digits else None


def expand_revisions(model: str, revisions: str | None) -> list[tuple[str, str | None, int | None]]:
    """(what --model gets, revision, step) for each revision of ``model``."""
    wanted = as_list(revisions, "--revisions")
    if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "config.json")):
        available = run_folder_revisions(model)
        if not available:
            raise EttinError(f"{model} has no config.json, no final/ and no checkpoint-STEP/ folder; expected a model "
                             "folder or a pretraining run folder")
        if not wanted:
            wanted = ["final"] if "final" in available else [list(available)[-1]]
        elif wanted == ["all"]:
            wanted = list(available)
        chosen = []
        for revision in wanted:
            name = f"checkpoint-{revision}" if revision.isdigit() else revision
            if name not in available:
                raise EttinError(f"--revisions {revision}: {model} has no {name}/; it has {', '.join(available)}")
            chosen.append((available[name][0], name, available[name][1]))
        return chosen
    if os.path.isdir(model):
        if wanted:
            raise EttinError(f"--revisions: {model} is one model folder; revisions apply to hub models and "
                             "pretraining run folders (with checkpoint-STEP/ inside)")
        return [(model, None, None)]
    ref = resolve(model)  # a short name or hub id; an unknown name fails here
    if "@" in model:
        if wanted:
            raise EttinError(f"--revisions: {model} already names a revision")
        return [(model, ref.revision, step_of(ref.revision))]
    if wanted == ["all"]:
        from .hub import hub_revisions

        wanted = hub_revisions(ref.path)
    return [(f"{ref.path}@{revision}" if revision else model, revision, step_of(revision)) for revision in wanted or [None]]


def folder_label(model: str) -> str:
    if os.path.isdir(model):
        parts = [p for p in os.path.normpath(os.path.abspath(model)).split(os.sep) if p]
        name = parts[-2] if parts[-1] == "final" or CHECKPOINT.match(parts[-1]) else parts[-1]
    else:
        name = model.split("@")[0].replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def model_facts(model: str, spec: str) -> dict:
    """arch, variant (encoder, decoder, enc-from-dec, ... or the model type of a baseline), size and parameters."""
    from .models import ETTIN_CLASSES, locate_model

    facts = {"arch": None, "variant": None, "size": None, "parameters": None}
    short = next(((variant, model[len(variant) + 1:]) for variant in VARIANTS if model.startswith(variant + "-")
                  and model[len(variant) + 1:] in SHAPES), None)
    if short:
        facts.update(arch=VARIANTS[short[0]][0], variant=short[0], size=short[1])
    try:
        located = locate_model(spec)
    except EttinError:  # the run itself will fail and say why; the table keeps what the name tells
        return facts
    config = located.config
    facts["arch"] = located.arch
    facts["variant"] = facts["variant"] or (located.arch if located.ettin else f"{config.model_type} {located.arch}")
    if located.ettin and facts["size"] is None:
        facts["size"] = next((size for size, shape in SHAPES.items()
                              if (shape.layers, shape.hidden) == (config.num_hidden_layers, config.hidden_size)), None)
    import torch

    with torch.device("meta"):
        built = ETTIN_CLASSES[located.arch].auto.from_config(config)
    facts["parameters"] = sum(p.numel() for p in built.parameters())
    return facts


def plan(config: StudyConfig) -> list[Run]:
    """Every run of the study, in order: model, revision, seed."""
    if config.recipe not in RECIPES:
        raise EttinError(f"--recipe {config.recipe}: expected one of {', '.join(RECIPES)}")
    if config.recipe in PROBES and config.seeds != "0":
        raise EttinError(f"--seeds {config.seeds}: {config.recipe} scores each model as it is, once; drop --seeds")
    seeds = [None] if config.recipe in PROBES else parse_seeds(config.seeds)
    runs, labels = [], {}
    entries = model_entries(config)
    short = [folder_label(model) for model, _ in entries]
    for (model, extra_args), label in zip(entries, short):
        if short.count(label) > 1 and os.path.isdir(model):  # two run folders of one name: add their parents'
            label = folder_label(os.path.dirname(os.path.normpath(os.path.abspath(model)))) + "-" + label
        if labels.setdefault(label, model) != model:
            raise EttinError(f"--models: {model} and {labels[label]} would share the folder {label}; rename one")
        revisions = expand_revisions(model, config.revisions)
        facts = model_facts(model, revisions[0][0])
        for spec, revision, step in revisions:
            run_label = f"{label}@{revision}" if revision else label
            for seed in seeds:
                folder = os.path.join(config.output_dir, run_label, *([f"seed-{seed}"] if seed is not None else []))
                runs.append(Run(model, label, spec, revision, step, seed, folder, extra_args, facts))
    return runs


# ----------------------------------------------------------------------------------------------- running


def finished(run: Run, recipe: str) -> bool:
    return os.path.isfile(os.path.join(run.folder, "metrics.json")) and (
        recipe in PROBES or os.path.isdir(os.path.join(run.folder, "final")))


def command(run: Run, config: StudyConfig, recipe_args: list[str]) -> list[str]:
    start = shlex.split(config.launcher) if config.launcher else [sys.executable]
    seed = ["--seed", str(run.seed)] if run.seed is not None else []
    # a run interrupted earlier goes on from its last checkpoint
    resume = ["--resume-from-checkpoint", "latest"] if complete_checkpoints(run.folder) else []
    return [*start, "-m", f"ettin_ft.{config.recipe}", "--model", run.spec, "--output-dir", run.folder, *seed,
            *resume, *recipe_args, *run.extra_args]


def error_line(log_path: str) -> str:
    """The run's own error line (``error: ...``), else the last line it printed."""
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        lines = [line.strip() for line in handle.read().replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1].removeprefix("error:").strip()


def execute(run: Run, config: StudyConfig, recipe_args: list[str], log_dir: str) -> dict:
    """Run one recipe run in its own process (kept if finished earlier); its row for the table."""
    row = {"status": "ok", "reused": True, "error": "", "wall_s": None}
    if not finished(run, config.recipe):
        os.makedirs(log_dir, exist_ok=True)
        log_path = os.path.join(log_dir, os.path.relpath(run.folder, config.output_dir).replace(os.sep, "_") + ".log")
        started = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(shlex.join(command(run, config, recipe_args)) + "\n")
            log.flush()
            result = subprocess.run(command(run, config, recipe_args), stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        row.update(reused=False, wall_s=round(time.perf_counter() - started, 1))
        if result.returncode != 0 or not finished(run, config.recipe):
            row.update(status="failed", error=f"exit {result.returncode}: {error_line(log_path)} (log: {log_path})")
            return row
    with open(os.path.join(run.folder, "metrics.json"), encoding="utf-8") as handle:
        row.update(metric_columns(json.load(handle), config.recipe))
    return row


def metric_columns(metrics: dict, recipe: str) -> dict[str, float]:
    """before_<m>/after_<m> for a recipe's metrics.json; the probe's shares and r for the bias probe; the
    macro-averages and each task's acc and acc_norm for zero-shot."""
    if recipe == "zeroshot":
        columns = dict(metrics["average"])
        columns.update({f"{task}_{name}": values[name] for task, values in metrics["tasks"].items()
                        for name in ("acc", "acc_norm")})
        return columns
    if recipe == "bias":
        columns = {f"preference_{g}": v for g, v in metrics["preference"].items()}
        columns.update({f"gotcha_{g}": v for g, v in metrics["gotcha"].items()})
        columns["bls_pearson_r"] = metrics["bls_pearson_r"]
        return columns
    return {f"{stage}_{name}": value for stage in ("before", "after")
            for name, value in (metrics.get(stage) or {}).items() if isinstance(value, (int, float))}


# ----------------------------------------------------------------------------------------------- outputs


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


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


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


def line_plot(plt, lines: dict[str, list[dict]], x: str, metric: str, title: str, path: str, log_x: bool = False) -> None:
    """One line per label: the metric's mean (± std over seeds) against the groups' ``x`` ("parameters" or "step")."""
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for label, line in lines.items():
        line = sorted(line, key=lambda g: g[x])
        axis.errorbar([g[x] for g in line], [g["metrics"][metric][0] for g in line],
                      yerr=[g["metrics"][metric][1] for g in line], marker="o", capsize=3, label=label)
    if log_x:
        axis.set_xscale("log")
    axis.set_xlabel({"parameters": "parameters", "step": "pretraining step"}[x])
    axis.set_ylabel(metric.removeprefix("after_"))
    axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot(groups: list[dict], metric: str, output_dir: str) -> dict[str, str]:
    """The three plots; returns file → why it was not drawn, for those it could not draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = metric.removeprefix("after_")
    skipped = {}
    points = [g for g in latest(groups) if metric in g["metrics"] and g["parameters"]]
    if points:
        lines = {v: [g for g in points if g["variant"] == v] for v in sorted({g["variant"] for g in points})}
        line_plot(plt, lines, "parameters", metric, f"{name} against model size",
                  os.path.join(output_dir, "metric_vs_size.png"), log_x=True)
    else:
        skipped["metric_vs_size.png"] = "no finished run reported the metric"
    stepped = [g for g in groups if metric in g["metrics"] and g["step"] is not None]
    models = sorted({g["model"] for g in stepped})
    if stepped and any(len({g["step"] for g in stepped if g["model"] == m}) > 1 for m in models):
        lines = {folder_label(m): [g for g in stepped if g["model"] == m] for m in models}
        line_plot(plt, lines, "step", metric, f"{name} against the pretraining checkpoint",
                  os.path.join(output_dir, "metric_vs_step.png"))
    else:
        skipped["metric_vs_step.png"] = "no model was run at more than one checkpoint step (--revisions)"
    pairs = encoder_decoder_pairs(groups, metric)
    if pairs:
        figure, axis = plt.subplots(figsize=(max(4, 0.8 * len(pairs) + 2), 3.8))
        axis.bar([label for label, _ in pairs], [difference for _, difference in pairs],
                 color=["tab:blue" if d >= 0 else "tab:orange" for _, d in pairs])
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_ylabel(f"encoder − decoder {name}")
        axis.set_title("encoder minus decoder of the same size")
        axis.tick_params(axis="x", rotation=30)
        figure.tight_layout()
        figure.savefig(os.path.join(output_dir, "encoder_minus_decoder.png"), dpi=100)
        plt.close(figure)
    else:
        skipped["encoder_minus_decoder.png"] = "no encoder and decoder of one size finished at the same revision"
    return skipped


def cell(values: tuple[float, float] | None, runs: int) -> str:
    if values is None:
        return "–"
    mean, std = values
    return f"{mean:.4f} ± {std:.4f}" if runs > 1 else f"{mean:.4f}"


def write_report(rows: list[dict], config: StudyConfig, recipe_args: list[str]) -> None:
    groups = aggregate(rows)
    metric = primary_metric(rows, config)
    skipped = plot(groups, metric, config.output_dir) if metric else dict.fromkeys(PLOTS, "no metric was reported")
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


def run_study(config: StudyConfig, recipe_args: list[str] = (), dry_run: bool = False) -> list[dict]:
    """Run (or reuse) every run of the study and write its table, report and plots; returns the rows."""
    configured = config.recipe_args  # a list or one string in a --config file
    configured = [str(a) for a in configured] if isinstance(configured, list) else shlex.split(configured or "")
    recipe_args = [*configured, *recipe_args]
    config = replace(config, recipe_args=None)
    runs = plan(config)
    if dry_run:
        for run in runs:
            print(shlex.join(command(run, config, recipe_args)))
        return []
    os.makedirs(config.output_dir, exist_ok=True)
    rows = []
    for number, run in enumerate(runs, 1):
        where = f"{run.label}{'@' + run.revision if run.revision else ''}" + (f" seed {run.seed}" if run.seed is not None else "")
        print(f"[{number}/{len(runs)}] {config.recipe} {where} ...", flush=True)
        row = {"model": run.model, **run.facts, "revision": run.revision, "step": run.step, "seed": run.seed,
               "folder": run.folder, **execute(run, config, recipe_args, os.path.join(config.output_dir, "logs"))}
        summary = "finished earlier, kept" if row["reused"] else f"{row['wall_s']:.0f} s"
        print(f"[{number}/{len(runs)}] {where}: {row['status']} ({summary})"
              + (f": {row['error']}" if row["error"] else ""), flush=True)
        rows.append(row)
    write_table(rows, config.output_dir)
    write_report(rows, config, recipe_args)
    return rows


@cli_entry
def main(argv: list[str] | None = None) -> None:
    study_args, recipe_args = split_arguments(sys.argv[1:] if argv is None else list(argv))
    config, dry_run = parse_config(
        StudyConfig, argv=study_args, prog="python -m ettin_ft.compare",
        description="Run one recipe over several models, revisions and seeds (arguments after -- go to the recipe), "
                    "then write comparison.csv/.json, REPORT.md and plots.")
    rows = run_study(config, recipe_args, dry_run)
    failed = [r for r in rows if r["status"] != "ok"]
    if rows:
        print(f"{len(rows) - len(failed)}/{len(rows)} runs finished; {config.output_dir}/REPORT.md")
    if failed:
        print(f"error: {len(failed)} run(s) failed; see {config.output_dir}/REPORT.md", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
