"""The work-arounds in ettin_ft/compat.py: each is still needed by the supported releases (a test here fails once
an upgrade makes it unnecessary) and does what it says."""

import dataclasses

import pytest


def test_multi_vector_training_arguments_need_the_parsable_max_length():
    from sentence_transformers import MultiVectorEncoderTrainingArguments
    from transformers import HfArgumentParser

    with pytest.raises(ValueError, match="max_length"):  # upstream still refuses it: the work-around stays
        HfArgumentParser(MultiVectorEncoderTrainingArguments)

    from ettin_ft.config import parse_config

    for flag, expected in (("64", 64), ('{"query": 32, "document": 180}', {"query": 32, "document": 180})):
        (args, _) = parse_config(MultiVectorEncoderTrainingArguments, argv=["--output-dir", "x", "--max-length", flag])
        assert args.max_length == expected


def test_the_parsable_field_leaves_ordinary_unions_alone():
    from ettin_ft.compat import int_or_json, parsable_field

    @dataclasses.dataclass
    class Fields:
        plain: int | None = None
        with_text: str | dict | None = None
        mixed: int | dict | None = None

    plain, with_text, mixed = dataclasses.fields(Fields)
    assert parsable_field(plain) is plain and parsable_field(with_text) is with_text
    assert parsable_field(mixed).type is int_or_json and mixed.type != int_or_json  # a copy; the class is unchanged


def test_sentence_transformers_trainers_save_on_every_process_unless_told(tiny_encoder_dir, tmp_path, monkeypatch):
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)

    from ettin_ft.compat import save_from_the_writing_process_only

    # A process that must not write, as every process but the first under torchrun.
    monkeypatch.setattr(SentenceTransformerTrainingArguments, "should_save", property(lambda self: False))
    model = SentenceTransformer(str(tiny_encoder_dir), device="cpu")
    rows = Dataset.from_dict({"anchor": ["a"], "positive": ["b"]})

    def trainer():
        args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "run"), report_to=[])
        return SentenceTransformerTrainer(model=model, args=args, train_dataset=rows)

    trainer().save_model(str(tmp_path / "upstream"))
    assert (tmp_path / "upstream" / "modules.json").exists()  # upstream still writes here: the work-around stays
    patched = trainer()
    save_from_the_writing_process_only(patched)
    patched.save_model(str(tmp_path / "patched"))
    assert not (tmp_path / "patched").exists()


def test_accelerate_still_refuses_a_second_precision_in_one_process():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from ettin_ft.compat import accelerator_state_of_its_own

    saved = dict(AcceleratorState._shared_state)
    try:
        Accelerator(cpu=True, mixed_precision="no")
        with pytest.raises(ValueError, match="already been initialized"):  # upstream still refuses: the work-around stays
            Accelerator(cpu=True, mixed_precision="bf16")
        with accelerator_state_of_its_own():
            assert Accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"
        assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"  # the caller's state is back
    finally:
        AcceleratorState._shared_state.clear()
        AcceleratorState._shared_state.update(saved)
