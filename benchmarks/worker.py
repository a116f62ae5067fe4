"""Benchmark plumbing: run a command (or one configuration in a fresh worker process, for clean timings and
peak memory) and read back the result the worker reports."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

RESULT = "RESULT "
RECIPES_DIR = str(Path(__file__).resolve().parents[1] / "recipes")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# recipe flags for short benchmark runs on a CPU: fp32 (equal precision on every CPU), no tracker, no bars
QUIET_FP32 = ["--precision", "fp32", "--report-to", "none", "--disable-tqdm", "true", "--logging-steps", "50"]


def plain_recipe(name: str) -> ModuleType:
    """recipes/<name>.py: the plain library script a benchmark times ettin-ft against."""
    if RECIPES_DIR not in sys.path:
        sys.path.insert(0, RECIPES_DIR)
    return importlib.import_module(name)


def report(value: Any) -> None:
    """Called in the worker: hand ``value`` back to the parent."""
    print(RESULT + json.dumps(value), flush=True)


def run(command: list[str]) -> str:
    """Run ``command``; its stdout, or exit with the command and the end of its stderr."""
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{out.stderr[-3000:]}")
    return out.stdout


def run_worker(command: list[str]) -> Any:
    """Run a worker command and return the value it reported."""
    stdout = run(command)
    line = next((l for l in reversed(stdout.splitlines()) if l.startswith(RESULT)), None)
    if line is None:
        sys.exit(f"no result from: {' '.join(command)}")
    return json.loads(line[len(RESULT):])


def dense_scifact(steps: int) -> list[str]:
    """Dense-recipe flags of the encoder-vs-decoder retrieval studies: PubMedQA pairs → NDCG@10 on SciFact."""
    return ["--data", str(SHARED / "retrieval_pairs" / "pubmedqa_pqal.jsonl"),
            "--eval-beir", str(SHARED / "retrieval_eval" / "scifact"), "--max-steps", str(steps),
            "--per-device-train-batch-size", "32", "--learning-rate", "3e-4", "--max-seq-length", "128",
            "--batch-sampler", "no_duplicates", *QUIET_FP32]


def compare_study(output_dir: Path, recipe: str, models: list[str], seeds: str, recipe_args: list[str],
                  *compare_flags: str) -> int:
    """Run one `python -m ettin_ft.compare` study into ``output_dir``; its exit status (a failed run is a row of
    the study's report, so the caller decides whether it is fatal)."""
    command = [sys.executable, "-m", "ettin_ft.compare", "--recipe", recipe, "--models", ",".join(models),
               "--seeds", seeds, "--output-dir", str(output_dir), *compare_flags, "--", *recipe_args]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command).returncode
