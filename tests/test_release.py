"""Python callers get the release settings the command line gets: each recipe's release() against its CLI."""

import importlib

import pytest

from ettin_ft.config import to_dict
from ettin_ft.errors import EttinError


@pytest.mark.parametrize("recipe, overrides, flags", [
    ("dense", {"learning_rate": 1e-4}, ["--learning-rate", "1e-4"]),
    ("colbert", {}, []),
    ("sparse", {"max_steps": 7, "held_out": 5}, ["--max-steps", "7", "--held-out", "5"]),
    ("rerank", {}, []),
    ("classify", {"task": "rte"}, ["--task", "rte"]),
    ("sft", {"lora": True}, ["--lora"]),
])
def test_release_resolves_what_the_command_line_does(recipe, overrides, flags, tmp_path, monkeypatch):
    module = importlib.import_module(f"ettin_ft.{recipe}")
    resolved = {}
    # the command line up to training: what main() hands to train_<recipe>
    monkeypatch.setattr(module, f"train_{recipe}", lambda config, args, dry_run=False: resolved.update(config=config, args=args))
    module.main(["--output-dir", str(tmp_path / "run"), *flags])
    config, args = module.release(str(tmp_path / "run"), **overrides)
    assert to_dict(config) == to_dict(resolved["config"])
    assert {k: v for k, v in to_dict(args).items() if k != "logging_dir"} == \
        {k: v for k, v in to_dict(resolved["args"]).items() if k != "logging_dir"}
    # and they are the release's settings, not the libraries' defaults
    from transformers import TrainingArguments

    assert args.learning_rate != TrainingArguments(output_dir="x").learning_rate


def test_an_unknown_override_is_refused():
    from ettin_ft import dense

    with pytest.raises(EttinError, match="unknown setting.*learning_rat; expected fields of DenseConfig"):
        dense.release("runs/x", learning_rat=1e-4)


@pytest.mark.parametrize("recipe, yaml_name, config_class", [
    ("dense", "dense", "DenseConfig"), ("colbert", "colbert", "ColbertConfig"), ("sparse", "sparse", "SparseConfig"),
    ("rerank", "rerank", "RerankConfig"), ("sft", "sft", "SftRecipeConfig"), ("sft", "lora", "SftRecipeConfig"),
    ("classify", "classify/default", "ClassifyConfig"),
])
def test_no_dataclass_default_contradicts_its_yaml(recipe, yaml_name, config_class):
    """A config built in Python without release() still gets the release's values for the fields the YAML sets
    (the release data, which applies only when --data is not given, and the LoRA switch of lora.yaml excepted)."""
    import dataclasses

    from ettin_ft.config import shipped_config

    release = shipped_config(yaml_name)
    owned_elsewhere = {"data", "data_config", "max_samples", "lora"}
    for field in dataclasses.fields(getattr(importlib.import_module(f"ettin_ft.{recipe}"), config_class)):
        if field.name in release and field.name not in owned_elsewhere:
            assert field.default == release[field.name], (yaml_name, field.name, field.default, release[field.name])
