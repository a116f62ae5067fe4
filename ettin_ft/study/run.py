"""Running a study: each run in its own process (finished ones kept), its metrics read back as a table row."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import replace

from ..run_folder import RunFolder
from .plan import Run, StudyConfig, plan
from .report import write_study_report, write_table

def command(run: Run, config: StudyConfig, recipe_args: list[str]) -> list[str]:
    start = shlex.split(config.launcher) if config.launcher else [sys.executable]
    seed = ["--seed", str(run.seed)] if run.seed is not None else []
    # a run interrupted earlier goes on from its last checkpoint
    resume = ["--resume-from-checkpoint", "latest"] if RunFolder(run.folder).checkpoints else []
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
    if not RunFolder(run.folder).finished:
        os.makedirs(log_dir, exist_ok=True)
        log_path = os.path.join(log_dir, os.path.relpath(run.folder, config.output_dir).replace(os.sep, "_") + ".log")
        started = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(shlex.join(command(run, config, recipe_args)) + "\n")
            log.flush()
            result = subprocess.run(command(run, config, recipe_args), stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        row.update(reused=False, wall_s=round(time.perf_counter() - started, 1))
        if result.returncode != 0 or not RunFolder(run.folder).finished:
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
    write_study_report(rows, config, recipe_args)
    return rows
