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
