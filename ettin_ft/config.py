"""Recipe configuration: dataclasses filled from a YAML file (``--config``) and command-line flags.

Every dataclass field is a flag (HfArgumentParser); YAML values become the defaults that flags then
override, as in trl's TrlParser. ``--dry-run`` is handled by each recipe after parsing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from importlib.resources import files
from typing import Any

import yaml
from transformers import HfArgumentParser

from .data.text import text_lines
from .errors import EttinError, OneLineErrors, check_output_dir


class DataclassArgumentParser(OneLineErrors, HfArgumentParser):
    """HfArgumentParser with one-line errors."""

    def _parse_dataclass_field(self, parser, field):
        from .compat import parsable_field

        super()._parse_dataclass_field(parser, parsable_field(field))


def read_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise EttinError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load("".join(line for _, line in text_lines(path))) or {}
    except yaml.YAMLError as error:
        raise EttinError(f"config file {path} is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(content, dict):
        raise EttinError(f"config file {path} must be a mapping of field: value, found {type(content).__name__}")
    return content


def shipped_config(name: str) -> dict[str, Any]:
    """configs/<name>.yaml as installed with the package (``ettin_ft.configs``), e.g. ``classify/sst2``."""
    return read_yaml(str(files("ettin_ft.configs") / f"{name}.yaml"))


def config_file(path: str) -> str:
    """A --config file: the path given, or else the YAML shipped with ettin-ft under that name, so
    ``configs/rerank/ettin-reranker.yaml`` (or ``rerank/ettin-reranker``) works outside a checkout too."""
    if os.path.exists(path):
        return path
    name = path.removeprefix("configs/").removesuffix(".yaml")
    shipped = files("ettin_ft.configs") / f"{name}.yaml"
    return str(shipped) if shipped.is_file() else path


def early_value(argv: list[str] | None, name: str, **argument) -> Any:
    """What ``--name`` is set to, read before the full parse (which needs the defaults it selects): the flag's
    value, else the ``--config`` file's, else None. ``argument`` as for ``add_argument``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(f"--{name}", **argument)
    parser.add_argument("--config")
    known, _ = parser.parse_known_args(argv)
    flag = getattr(known, name)
    if flag is not None:
        return flag
    return read_yaml(config_file(known.config)).get(name) if known.config else None


def parse_config(*config_classes, argv: list[str] | None = None, prog: str | None = None, description: str = "",
                 defaults: dict[str, Any] | None = None):
    """Parse ``config_classes`` from ``--config FILE`` plus flags; returns (instances..., dry_run).

    Precedence, lowest first: dataclass defaults, ``defaults`` (a recipe's own), the YAML file, flags.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = DataclassArgumentParser(config_classes, prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML file of field: value pairs; flags override it")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved configuration and exit")
    if defaults:
        parser.set_defaults(**defaults)
    known, _ = parser.parse_known_args(argv)
    if known.config:
        values = read_yaml(config_file(known.config))
        fields = {f.name for cls in config_classes for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise EttinError(f"config file {known.config}: unknown field(s) {', '.join(unknown)}")
        parser.set_defaults(**values)
    # The flags that belong to no dataclass (--config, --dry-run) come back as a trailing namespace.
    try:
        *instances, extra, unknown = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False,
                                                                         return_remaining_strings=True)
    except ValueError as error:  # a configuration class refused a combination of values
        raise EttinError(str(error).strip().splitlines()[0]) from None
    if unknown:
        parser.reject_unknown(unknown)
    for instance in instances:
        check_output_dir(getattr(instance, "output_dir", None))
    return (*instances, extra.dry_run)


def refuse_inapplicable(config) -> None:
    """One line for a field set away from its default while the field it applies with is off: ``REQUIRES`` of the
    config class maps such fields to that field (e.g. ``lora_r`` → ``lora``)."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, needed in getattr(config, "REQUIRES", {}).items():
        if getattr(config, name) != defaults[name] and not getattr(config, needed):
            flag, needed_flag = f"--{name.replace('_', '-')}", f"--{needed.replace('_', '-')}"
            raise EttinError(f"{flag} {getattr(config, name)} applies only with {needed_flag}; add {needed_flag} "
                             f"or drop {flag}")


def plain(value: Any) -> Any:
    """``value`` as YAML/JSON-safe data: enums by value, other objects as text."""
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "value", str(v))))


def to_dict(*configs) -> dict[str, Any]:
    """Plain, YAML-safe dict of one or more config dataclasses."""
    merged: dict[str, Any] = {}
    for config in configs:
        merged.update(plain({f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}))
    return merged


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def save_config(path: str, *configs) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(dump_yaml(to_dict(*configs)))
