"""Convert weights between an Ettin encoder (ModernBertForMaskedLM) and decoder (ModernBertDecoderForCausalLM).

The two share every weight but for naming: the encoder fuses q/k/v into one ``Wqkv`` projection and calls
its prediction head ``head``; the decoder splits q/k/v and calls it ``lm_head``. The conversion is exact
both ways, which the cross-objective runs (encoder-from-decoder, decoder-from-encoder) start from.

    python -m ettin_ft.convert --model runs/decoder/final --to encoder --output-dir runs/enc-from-dec-init
"""

from __future__ import annotations

import os
import re

import torch
from transformers import PretrainedConfig, PreTrainedModel

from .folders import atomic_folder
from .models import arch_of, ettin_classes, is_ettin, load_model, load_tokenizer, locate_model
from .errors import ArgumentParser, EttinError, cli_entry
from .tokenizer import set_post_processing

SHARED_CONFIG_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "hidden_activation", "max_position_embeddings", "initializer_range", "initializer_cutoff_factor", "norm_eps",
    "norm_bias", "pad_token_id", "eos_token_id", "bos_token_id", "cls_token_id", "sep_token_id", "attention_bias",
    "attention_dropout", "embedding_dropout", "mlp_bias", "mlp_dropout", "decoder_bias", "classifier_dropout",
    "classifier_bias", "classifier_activation", "layer_types", "rope_parameters", "tie_word_embeddings",
)


def convert_config(config: PretrainedConfig, to: str) -> PretrainedConfig:
    values = {name: getattr(config, name) for name in SHARED_CONFIG_FIELDS if hasattr(config, name)}
    # Both configurations take the 128-token window as local_attention; each stores its half-width.
    values["local_attention"] = 2 * config.sliding_window
    values["global_attn_every_n_layers"] = getattr(config, "global_attn_every_n_layers", 3)
    return ettin_classes(to).config(**values, attn_implementation=config._attn_implementation)


def _encoder_to_decoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for name, tensor in state.items():
        if name.endswith("attn.Wqkv.weight"):
            q, k, v = tensor.chunk(3, dim=0)
            stem = name[: -len("Wqkv.weight")]
            converted.update({stem + "q_proj.weight": q, stem + "k_proj.weight": k, stem + "v_proj.weight": v})
        else:
            converted[re.sub(r"^head\.", "lm_head.", name)] = tensor
    return converted


def _decoder_to_encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for name, tensor in state.items():
        if name.endswith(("attn.k_proj.weight", "attn.v_proj.weight")):
            continue
        if name.endswith("attn.q_proj.weight"):
            stem = name[: -len("q_proj.weight")]
            converted[stem + "Wqkv.weight"] = torch.cat(
                [tensor, state[stem + "k_proj.weight"], state[stem + "v_proj.weight"]], dim=0
            )
        else:
            converted[re.sub(r"^lm_head\.", "head.", name)] = tensor
    return converted


def convert_model(model: PreTrainedModel, to: str) -> PreTrainedModel:
    """The same weights in the other architecture ("encoder" or "decoder"); a no-op copy if already there."""
    if to not in ("encoder", "decoder"):
        raise EttinError(f"cannot convert to {to!r}; expected 'encoder' or 'decoder'")
    if not is_ettin(model.config):
        raise EttinError(f"cannot convert a {model.config.model_type} model: conversion maps Ettin (ModernBERT) weights")
    source = arch_of(model.config)
    if source == to:
        return model
    config = convert_config(model.config, to)
    state = model.state_dict()
    state = _encoder_to_decoder_state(state) if to == "decoder" else _decoder_to_encoder_state(state)
    target = ettin_classes(to).pretraining(config)
    missing, unexpected = target.load_state_dict(state, strict=False)
    # The tied output weight is the embedding itself; anything else missing would be a bug.
    if [m for m in missing if m != "decoder.weight"] or unexpected:
        raise EttinError(f"weight conversion mismatch: missing {missing}, unexpected {unexpected}")
    target.tie_weights()
    return target.to(next(model.parameters()).dtype)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m ettin_ft.convert",
        description="Convert an Ettin encoder to a decoder or back (exact, weights only), with its tokenizer.",
    )
    parser.add_argument("--model", required=True, help="short name, hub id or local folder of the source model")
    parser.add_argument("--to", required=True, choices=["encoder", "decoder"], help="target architecture")
    parser.add_argument("--output-dir", required=True, help="folder for the converted model (must not exist)")
    args = parser.parse_args(argv)
    if os.path.exists(args.output_dir):
        raise EttinError(f"output folder {args.output_dir} already exists; choose a new --output-dir")
    located = locate_model(args.model)
    converted = convert_model(load_model(located), args.to)
    tokenizer = load_tokenizer(located)
    set_post_processing(tokenizer, args.to)
    with atomic_folder(args.output_dir) as staging:
        converted.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    print(f"wrote {arch_of(converted.config)} to {args.output_dir}")


if __name__ == "__main__":
    main()
