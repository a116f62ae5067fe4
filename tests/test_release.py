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


@pytest.mark.parametrize("recipe, yaml_name, config_class, arguments", [
    ("dense", "dense", "DenseConfig", {}), ("colbert", "colbert", "ColbertConfig", {}),
    ("sparse", "sparse", "SparseConfig", {}), ("rerank", "rerank", "RerankConfig", {}),
    ("sft", "sft", "SftRecipeConfig", {}), ("sft", "lora", "SftRecipeConfig", {"lora": True}),
    ("classify", "classify/default", "ClassifyConfig", {}), ("classify", "classify/rte", "ClassifyConfig", {"task": "rte"}),
])
def test_the_yaml_is_the_one_home_of_a_release_value(recipe, yaml_name, config_class, arguments):
    """Every field a recipe's YAML sets defaults to None (unset) in its dataclass, and a config built in Python without
    release() takes the YAML's value (the release data, which applies only when --data is not given, and the LoRA
    switch of lora.yaml excepted)."""
    import dataclasses

    from ettin_ft.config import shipped_config

    release = shipped_config(yaml_name)
    config_class = getattr(importlib.import_module(f"ettin_ft.{recipe}"), config_class)
    owned = {f.name: f.default for f in dataclasses.fields(config_class)
             if f.name in release and f.name not in {"data", "data_config", "max_samples", "lora"}}
    assert owned and set(owned.values()) == {None}, owned
    built = config_class(**arguments)
    assert {name: getattr(built, name) for name in owned} == {name: release[name] for name in owned}
    assert config_class(**arguments, held_out=7).held_out == 7  # a value given is kept


@pytest.mark.parametrize("recipe, config_name, arguments", [
    ("dense", "DenseConfig", "sentence_transformers.SentenceTransformerTrainingArguments"),
    ("colbert", "ColbertConfig", "sentence_transformers.MultiVectorEncoderTrainingArguments"),
    ("sparse", "SparseConfig", "sentence_transformers.sparse_encoder.SparseEncoderTrainingArguments"),
    ("rerank", "RerankConfig", "sentence_transformers.cross_encoder.CrossEncoderTrainingArguments"),
    ("classify", "ClassifyConfig", "transformers.TrainingArguments"),
    ("sft", "SftRecipeConfig", "trl.SFTConfig"),
])
def test_train_checks_inputs_as_the_command_line_does(recipe, config_name, arguments, tiny_encoder_dir, tiny_decoder_dir,
                                                      world_dir, tmp_path):
    """Arguments built by hand, not by release(): an output folder that is a file, a finished run, missing data and
    the wrong architecture get the command line's one-line errors, before any model is loaded."""
    module = importlib.import_module(f"ettin_ft.{recipe}")
    config_class = getattr(module, config_name)
    arguments_module, arguments_name = arguments.rsplit(".", 1)
    library_arguments = getattr(importlib.import_module(arguments_module), arguments_name)
    cpu = {"use_cpu": True, "bf16": False} if recipe == "sft" else {}  # trl's SFTConfig asks for bf16 by default

    def arguments_class(output_dir):
        return library_arguments(output_dir=output_dir, **cpu)

    train = getattr(module, f"train_{recipe}")
    model = tiny_decoder_dir if recipe == "sft" else tiny_encoder_dir
    data = str(world_dir / ("sft_train.jsonl" if recipe == "sft" else "retrieval_train.jsonl"))
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(EttinError, match="is an existing file; expected a folder"):
        train(config_class(model=str(model), data=data), arguments_class(output_dir=str(a_file)))
    (tmp_path / "done" / "final").mkdir(parents=True)
    (tmp_path / "done" / "metrics.json").write_text("{}")  # written last: the run finished
    with pytest.raises(EttinError, match="already holds a finished run"):
        train(config_class(model=str(model), data=data), arguments_class(output_dir=str(tmp_path / "done")))
    with pytest.raises(EttinError, match="does not exist"):
        train(config_class(model=str(model), data=str(tmp_path / "none.jsonl")), arguments_class(output_dir=str(tmp_path / "x")))
    other = tiny_encoder_dir if recipe == "sft" else tiny_decoder_dir
    if recipe not in ("dense", "classify"):  # those two take both architectures
        with pytest.raises(EttinError, match="recipe"):
            train(config_class(model=str(other), data=data), arguments_class(output_dir=str(tmp_path / "y")))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
