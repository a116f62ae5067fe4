"""Repeated runs: the --seeds list, and the mean ± std over the runs that finished."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics

from .errors import EttinError


def parse_seeds(text) -> list[int]:
    """``"0,1,2"`` (or a list) as distinct integers, or one clear error."""
    items = text if isinstance(text, list) else str(text).split(",")
    try:
        seeds = [int(str(item).strip()) for item in items if str(item).strip()]
    except ValueError:
        raise EttinError(f"--seeds {text!r}: expected integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise EttinError(f"--seeds {text!r}: expected distinct integers, e.g. 0,1,2")
    return seeds


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise_seeds(runs: dict[int, dict]) -> dict:
    """One metrics.json from each seed's: the mean of every "before" and "after" metric, their standard deviations
    ("std"), the majority baseline and every seed's own results ("seeds")."""
    first = runs[next(iter(runs))]
    summary = {"std": {}}
    for stage in ("before", "after"):
        spread = {name: mean_std([run[stage][name] for run in runs.values()]) for name in first[stage]}
        summary[stage] = {name: mean for name, (mean, _) in spread.items()}
        summary["std"][stage] = {name: std for name, (_, std) in spread.items()}
    if "majority" in first:
        summary["majority"] = first["majority"]
    return {**summary, "seeds": {str(seed): run for seed, run in runs.items()}}


def train_each_seed(train, config, args, runtime=None):
    """``train(config, args, runtime, start_if_new=True)`` once per seed of ``config.seeds``, in DIR/seed-N/ (finished
    ones are kept; with --resume-from-checkpoint latest each seed that has a checkpoint goes on and the others
    start), then DIR/metrics.json (``summarise_seeds``) and DIR/config.yaml. Returns the last model trained."""
    from .run_folder import RunFolder, write_results

    seeds = parse_seeds(config.seeds)
    single = dataclasses.replace(config, seeds=None)
    runs, model = {}, None
    for number, seed in enumerate(seeds, 1):
        folder = RunFolder(os.path.join(args.output_dir, f"seed-{seed}"))
        if folder.finished:
            print(f"seed {seed} ({number}/{len(seeds)}): finished earlier, kept", flush=True)
        else:
            print(f"seed {seed} ({number}/{len(seeds)})", flush=True)
            model = train(single, dataclasses.replace(args, seed=seed, output_dir=folder.path), runtime,
                          start_if_new=True)
        with open(os.path.join(folder.path, "metrics.json"), encoding="utf-8") as handle:
            runs[seed] = json.load(handle)
    summary = summarise_seeds(runs)
    write_results(args.output_dir, config, args, summary.pop("before"), summary.pop("after"), extra=summary)
    return model
