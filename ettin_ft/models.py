"""Ettin models: the architecture → classes table, building an official shape, loading any encoder or
decoder (Ettin or another transformers model), LoRA targets, and the registry table.

``python -m ettin_ft.models`` prints the registry as a table, ``--json`` as a JSON list.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from dataclasses import dataclass

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    ModernBertConfig,
    ModernBertDecoderConfig,
    ModernBertDecoderForCausalLM,
    ModernBertForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
)

from .errors import ArgumentParser, EttinError, cli_entry
from .hub import locate
from .registry import (ARCHS, ETTIN_SPECIAL_IDS, LOCAL_WINDOW, OFFICIAL_SIZES, SHAPES, VOCAB_SIZE, ModelRef,
                       global_layers, hub_id, layer_types, rope_parameters, shape_of)


@dataclass(frozen=True)
class ArchClasses:
    model_type: str
    config: type
    pretraining: type  # the class pretraining builds
    auto: type  # the auto class that loads any model of this architecture with its pretraining head
    lora_targets: tuple[str, ...]  # attention and MLP linear layers (the encoder fuses q/k/v into Wqkv)


ETTIN_CLASSES = {
    "encoder": ArchClasses("modernbert", ModernBertConfig, ModernBertForMaskedLM, AutoModelForMaskedLM,
                           ("Wqkv", "Wo", "Wi")),
    "decoder": ArchClasses("modernbert-decoder", ModernBertDecoderConfig, ModernBertDecoderForCausalLM,
                           AutoModelForCausalLM, ("q_proj", "k_proj", "v_proj", "Wo", "Wi")),
}


def ettin_classes(arch: str) -> ArchClasses:
    if arch not in ETTIN_CLASSES:
        raise EttinError(f"unknown architecture {arch!r}; expected 'encoder' or 'decoder'")
    return ETTIN_CLASSES[arch]


def model_config(
    size: str,
    arch: str,
    *,
    vocab_size: int = VOCAB_SIZE,
    special_ids: dict[str, int] | None = None,
    context: int = 1024,
    global_rope_theta: float | None = None,
    local_rope_theta: float | None = None,
    attn_implementation: str | None = None,
) -> PretrainedConfig:
    """The official Ettin configuration of ``size`` for ``arch`` ("encoder" or "decoder")."""
    shape = shape_of(size)
    ids = {**ETTIN_SPECIAL_IDS, **(special_ids or {})}
    rope = rope_parameters(context, global_rope_theta, local_rope_theta)
    config = ettin_classes(arch).config(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        max_position_embeddings=context,
        layer_types=layer_types(shape.layers),
        global_attn_every_n_layers=3,
        local_attention=LOCAL_WINDOW,
        rope_parameters=rope,
        hidden_activation="gelu",  # with the doubled input projection: GeGLU
        attention_bias=False,
        mlp_bias=False,
        norm_bias=False,
        tie_word_embeddings=True,
        pad_token_id=ids["pad"],
        bos_token_id=ids["cls"],
        eos_token_id=ids["sep"],
        cls_token_id=ids["cls"],
        sep_token_id=ids["sep"],
        attn_implementation=attn_implementation,
    )
    return config


def special_ids_of(tokenizer) -> dict[str, int]:
    return {
        "cls": tokenizer.cls_token_id,
        "sep": tokenizer.sep_token_id,
        "pad": tokenizer.pad_token_id,
        "mask": tokenizer.mask_token_id,
    }


def build_model(size: str, arch: str, tokenizer=None, **config_kwargs) -> PreTrainedModel:
    """A freshly initialised Ettin model; with ``tokenizer`` its vocabulary and special ids are used."""
    if tokenizer is not None:
        config_kwargs.setdefault("vocab_size", len(tokenizer))
        config_kwargs.setdefault("special_ids", special_ids_of(tokenizer))
    return ettin_classes(arch).pretraining(model_config(size, arch, **config_kwargs))


def is_ettin(config: PretrainedConfig) -> bool:
    return any(config.model_type == classes.model_type for classes in ETTIN_CLASSES.values())


def arch_of(config: PretrainedConfig) -> str:
    """"encoder" or "decoder": Ettin's by model type, any other transformers model by its head (masked LM or
    causal LM), so BERT, RoBERTa, DeBERTa, Llama, SmolLM or Qwen baselines go through the same recipes."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    for arch, classes in ETTIN_CLASSES.items():
        if config.model_type == classes.model_type:
            return arch
    saved_as = config.architectures or []
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in saved_as):
        return "decoder"
    if any(name.endswith(("ForMaskedLM", "ForPreTraining")) for name in saved_as):
        return "encoder"
    # BERT-like types also have a causal-LM class: a masked-LM head means an encoder.
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    raise EttinError(f"model type {config.model_type!r} is neither an encoder with a masked-LM head nor a causal "
                     "decoder that transformers knows")


def describe_arch(config: PretrainedConfig) -> str:
    """"an Ettin encoder", "a bert encoder", …: how errors and notices name a model."""
    arch = arch_of(config)
    family = "Ettin" if is_ettin(config) else config.model_type
    return f"{'an' if family[0].lower() in 'aeiou' else 'a'} {family} {arch}"


def _needs(allowed: tuple[str, ...]) -> str:
    return " or ".join(f"{'an' if kind == 'encoder' else 'a'} {kind}" for kind in allowed)


@dataclass(frozen=True)
class LocatedModel:
    ref: ModelRef
    config: PretrainedConfig
    arch: str

    @property
    def ettin(self) -> bool:
        return is_ettin(self.config)


def locate_model(name: str | ModelRef, allowed: tuple[str, ...] = ARCHS, purpose: str = "this command",
                 hint: str = "") -> LocatedModel:
    """Find a model, read its configuration (nothing else is downloaded) and check its architecture.

    ``purpose`` and ``hint`` complete the wrong-architecture error: "X is an Ettin decoder; <purpose> needs an
    encoder<hint>". A model that is not an Ettin one gets one notice line: the defaults may not suit it.
    """
    ref = name if isinstance(name, ModelRef) else locate(name, arch=allowed[0] if len(allowed) == 1 else None)
    config = AutoConfig.from_pretrained(ref.path, revision=ref.revision)
    arch = arch_of(config)
    if arch not in allowed:
        raise EttinError(f"{ref.describe()} is {describe_arch(config)}; {purpose} needs {_needs(allowed)}{hint}")
    if not is_ettin(config):
        print(f"note: {ref.describe()} is {describe_arch(config)}, not an Ettin model: ettin-ft's Ettin-specific "
              "defaults (learning rates, special tokens, LoRA targets) may not suit it", file=sys.stderr, flush=True)
    return LocatedModel(ref, config, arch)


def load_model(name: str | LocatedModel, arch: str | None = None, wrong_arch_hint: str = "", **kwargs) -> PreTrainedModel:
    """Load an encoder (with its masked-LM head) or decoder (causal LM) from a short name, hub id or folder.

    ``wrong_arch_hint`` ends the error raised when the model is not the expected ``arch`` (say, which
    command takes the other kind).
    """
    located = name if isinstance(name, LocatedModel) else locate_model(name, (arch,) if arch else ARCHS, hint=wrong_arch_hint)
    return load_checked(ETTIN_CLASSES[located.arch].auto, located.ref, **kwargs)


def load_tokenizer(name: str | ModelRef | LocatedModel, arch: str | None = None):
    ref = name.ref if isinstance(name, LocatedModel) else name if isinstance(name, ModelRef) else locate(name, arch)
    return AutoTokenizer.from_pretrained(ref.path, revision=ref.revision)


def lora_target_modules(located: LocatedModel) -> list[str] | None:
    """The linear layers LoRA adapts: Ettin's attention and MLP projections; for other models peft's own
    per-model-type choice (None), or one clear line when peft has none."""
    if located.ettin:
        return list(ETTIN_CLASSES[located.arch].lora_targets)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    if located.config.model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        raise EttinError(f"{located.ref.describe()}: no default LoRA target modules for model type "
                         f"{located.config.model_type!r}; name them with --lora-target-modules")
    return None


# Keys that differ, as expected, when a pretraining checkpoint becomes another model: the pretraining heads it
# leaves out (MLM head, LM head, output bias) and the new classifier (or BERT's pooler).
EXPECTED_UNUSED = ("head.", "decoder.", "lm_head.", "cls.")  # cls.: a BERT-style MLM head
EXPECTED_NEW = ("classifier.", "score.", "pooler.")  # score.: the classifier of Llama-style decoders
logger = logging.getLogger(__name__)


@contextlib.contextmanager
def own_load_report():
    """Hold back transformers' LOAD REPORT table while a model loads (its logger off for the block only; not its
    level, which transformers also reads to decide on other checks): ettin-ft checks the loading itself and says
    in one line what was not expected."""
    transformers_logger = logging.getLogger("transformers.modeling_utils")
    disabled = transformers_logger.disabled
    transformers_logger.disabled = True
    try:
        yield
    finally:
        transformers_logger.disabled = disabled


def report_unexpected_loading(source: str, missing, unused, mismatched=(), new: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Warn in one line about the keys that differ beyond the expected ones (``EXPECTED_UNUSED``; ``EXPECTED_NEW``
    and ``new`` for missing ones); returns them by kind."""
    new = EXPECTED_NEW + tuple(new)
    names = [key[0] if isinstance(key, tuple) else key for key in mismatched]
    problems = {"missing": sorted(k for k in missing if not k.startswith(new) and not k.split(".", 1)[-1].startswith(new)),
                "unused": sorted(k for k in unused if not k.startswith(EXPECTED_UNUSED)),
                "resized": sorted(k for k in names if not k.startswith(new))}
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        listed = "; ".join(f"{kind}: {', '.join(keys[:6])}{f' and {len(keys) - 6} more' if len(keys) > 6 else ''}"
                           for kind, keys in problems.items())
        logger.warning(f"{source}: weights not loaded as expected ({listed})")
    return problems


def load_checked(auto_class, ref: ModelRef, new: tuple[str, ...] = (), **kwargs) -> PreTrainedModel:
    """``auto_class.from_pretrained`` for ``ref``, with its loading info (``output_loading_info=True``) checked;
    ``new``: more key prefixes the caller fills in itself."""
    with own_load_report():
        model, info = auto_class.from_pretrained(ref.path, revision=ref.revision, output_loading_info=True, **kwargs)
    report_unexpected_loading(ref.describe(), info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"], new)
    return model


def checkpoint_files(ref: ModelRef) -> list[str]:
    """``ref``'s safetensors files on disk (a hub model's from the cache), or [] (a .bin checkpoint, not cached)."""
    import glob
    import os

    folder = ref.path
    if not ref.local:
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(ref.path, revision=ref.revision, local_files_only=True,
                                       allow_patterns=["*.safetensors", "*.json"])
        except Exception:  # not in the cache
            return []
    return sorted(glob.glob(os.path.join(folder, "*.safetensors")))


def checkpoint_tensor_names(ref: ModelRef) -> set[str] | None:
    """The tensor names in ``ref``'s safetensors files (read from their headers), or None where there are none."""
    from safetensors import safe_open

    files = checkpoint_files(ref)
    if not files:
        return None
    names = set()
    for file in files:
        with safe_open(file, "pt") as handle:
            names |= set(handle.keys())
    return names


def checkpoint_tensors(ref: ModelRef, prefix: str) -> dict:
    """The tensors of ``ref``'s checkpoint whose names start with ``prefix``, named without it."""
    from safetensors import safe_open

    tensors = {}
    for file in checkpoint_files(ref):
        with safe_open(file, "pt") as handle:
            tensors.update({name[len(prefix):]: handle.get_tensor(name) for name in handle.keys() if name.startswith(prefix)})
    return tensors


def load_through_library(ref: ModelRef, build, transformers_model):
    """``build()``, a library's model (sentence-transformers) loaded from ``ref``, checked as
    ``load_checked`` checks loading info: the parameters of its transformers model (``transformers_model(built)``)
    against the checkpoint's tensor names, both without the base model's prefix."""
    stored = checkpoint_tensor_names(ref)
    if stored is None:
        return build()  # nothing to check against: transformers' own report stays
    with own_load_report():
        built = build()
    model = transformers_model(built)
    prefix = model.base_model_prefix + "."

    def bare(name: str) -> str:
        return name[len(prefix):] if name.startswith(prefix) else name

    loaded = {bare(name) for name in stored}
    wanted = {bare(name) for name, _ in model.named_parameters()}
    report_unexpected_loading(ref.describe(), wanted - loaded, loaded - wanted)
    return built


def count_parameters(size: str, arch: str) -> int:
    """Parameters of the official shape, embeddings included (tied weights once), built on meta."""
    import torch

    with torch.device("meta"):
        model = build_model(size, arch)
    return sum(p.numel() for p in model.parameters())


def registry_rows(include_tiny: bool = False) -> list[dict]:
    sizes = OFFICIAL_SIZES + (("tiny",) if include_tiny else ())
    rows = []
    for size in sizes:
        shape = SHAPES[size]
        for arch in ARCHS:
            rows.append(
                {
                    "name": size,
                    "arch": arch,
                    "hub_id": hub_id(size, arch) if size in OFFICIAL_SIZES else None,
                    "layers": shape.layers,
                    "hidden": shape.hidden,
                    "intermediate": shape.intermediate,
                    "heads": shape.heads,
                    "vocab": VOCAB_SIZE,
                    "global_layers": global_layers(shape.layers),
                    "parameters": count_parameters(size, arch),
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    header = ["name", "arch", "hub_id", "layers", "hidden", "intermediate", "heads", "global_layers", "parameters"]
    cells = [
        [
            r["name"],
            r["arch"],
            r["hub_id"] or "-",
            str(r["layers"]),
            str(r["hidden"]),
            str(r["intermediate"]),
            str(r["heads"]),
            ",".join(map(str, r["global_layers"])),
            f"{r['parameters'] / 1e6:,.1f}M",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    rows_text = [header, ["-" * w for w in widths], *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows_text)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m ettin_ft.models",
        description="The Ettin model registry: official shapes, hub ids and parameter counts "
        "(counted on the meta device, embeddings included; vocabulary 50368).",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per (size, arch)")
    parser.add_argument("--include-tiny", action="store_true", help="also list the in-package 'tiny' test size")
    args = parser.parse_args(argv)
    rows = registry_rows(include_tiny=args.include_tiny)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


if __name__ == "__main__":
    main()
