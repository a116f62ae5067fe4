"""A study's plan: which models, revisions and seeds it runs, each run's folder and what is known of its model."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field

from ..errors import EttinError
from ..folders import CHECKPOINT
from ..registry import SHAPES, VARIANTS, resolve
from ..seeds import parse_seeds

RECIPES = ("dense", "colbert", "sparse", "rerank", "classify", "tag", "sft", "bias", "zeroshot")


# Recipes that score a model as it is: one run per model and revision, no seeds, no final/.
PROBES = ("bias", "zeroshot")



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
        from ..hub import hub_revisions

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
    from ..models import ETTIN_CLASSES, locate_model

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
