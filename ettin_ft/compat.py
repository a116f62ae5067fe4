"""Work-arounds for the supported library versions, each naming the versions it targets.

Remove one when an upgrade makes it unnecessary (its test then still passes without it).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json


# trl 1.16 × transformers 5.3–5.25 (ModernBertDecoderForCausalLM; still needed: without it test_sft's fused-loss
# check fails on 5.24 and 5.25).
def route_fused_loss_through_prediction_head(trainer) -> None:
    """Route trl's fused LM head through ModernBertDecoder's prediction head.

    trl's fused loss projects the backbone's last hidden state straight through the output embeddings;
    ModernBertDecoder has a prediction head (dense, GELU, LayerNorm) in between, which the fused path would
    skip: training would then optimise a different model from the one that generates.
    """
    model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    if model.config.model_type != "modernbert-decoder":  # other decoders (Llama, Qwen, ...) project directly
        return
    fused_forward = model.forward

    def with_head(module, inputs, output):
        output["last_hidden_state"] = model.lm_head(output["last_hidden_state"])
        return output

    @functools.wraps(fused_forward)
    def forward(*args, fused_lm_head=False, **kwargs):
        if not fused_lm_head:
            return fused_forward(*args, **kwargs)
        hook = model.model.register_forward_hook(with_head)
        try:
            return fused_forward(*args, fused_lm_head=True, **kwargs)
        finally:
            hook.remove()

    model.forward = forward


# sentence-transformers 6.2–6.3 (MultiVectorEncoderTrainingArguments.max_length) × transformers' HfArgumentParser.
def parsable_field(field):
    """``field``, or a copy that HfArgumentParser can turn into a flag: the parser takes one type per flag (plus
    None, or str), and refuses a ``Union[int, None, dict]`` outright. The copy parses an integer or a JSON object."""
    members = getattr(field.type, "__args__", ())
    if str in members or len(members) <= 2 or dict not in (getattr(m, "__origin__", m) for m in members):
        return field
    parsable = copy.copy(field)
    parsable.type = int_or_json
    return parsable


def int_or_json(value: str):
    return json.loads(value) if value.lstrip().startswith("{") else int(value)


# sentence-transformers 6.2–6.3 (MultiVectorEncoderTrainer under DDP: torchrun, accelerate launch).
def expose_similarity_to_wrapped_losses(trainer) -> None:
    """Let the multi-vector losses score through a DDP-wrapped model. The trainer hands the wrapped model to the loss
    and binds onto the wrapper only the model methods other losses call (preprocess, get_embedding_dimension); the
    ColBERT losses call ``model.similarity`` / ``similarity_pairwise``, which the wrapper lacks, so every rank of a
    multi-process ColBERT run failed with AttributeError at its first step."""
    override = trainer.override_model_in_loss

    @functools.wraps(override)
    def override_model_in_loss(loss, model):
        for name in ("similarity", "similarity_pairwise"):
            if not hasattr(model, name) and hasattr(trainer.model, name):
                setattr(model, name, getattr(trainer.model, name))
        return override(loss, model)

    trainer.override_model_in_loss = override_model_in_loss


# sentence-transformers 6.2–6.3 × transformers 5.x, whose Trainer.save_model calls ``_save`` on every process and
# checks ``should_save`` inside its own ``_save``.
def save_from_the_writing_process_only(trainer) -> None:
    """Let only the writing process save. sentence-transformers' trainers override ``_save`` on the assumption that
    only process zero reaches it, so under torchrun every process wrote the same files at once: a published
    final/ or a checkpoint could hold one process's JSON spliced into another's. (A sharded model's weights are
    gathered before ``_save``, so the other processes have nothing left to do there.)"""
    save = trainer._save

    @functools.wraps(save)
    def _save(output_dir=None, state_dict=None):
        if trainer.args.should_save:
            save(output_dir, state_dict=state_dict)

    trainer._save = _save


# accelerate 1.x: one AcceleratorState per process, which refuses a second Accelerator of another precision.
@contextlib.contextmanager
def accelerator_state_of_its_own():
    """A fresh AcceleratorState for the block (a pretraining run may use another precision than an earlier run in
    the same Python process), and the caller's state back afterwards. The process-wide part (device, process group:
    PartialState) is shared and kept."""
    from accelerate.state import AcceleratorState

    saved = dict(AcceleratorState._shared_state)
    AcceleratorState._reset_state()
    try:
        yield
    finally:
        AcceleratorState._shared_state.clear()
        AcceleratorState._shared_state.update(saved)
