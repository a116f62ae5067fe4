"""The pretraining forward pass: packed attention inputs and the objective's loss on target positions only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_bidirectional_sliding_window_mask,
    packed_sequence_mask_function,
)


def packed_attention_inputs(model: nn.Module, batch: dict[str, torch.Tensor], encoder: bool) -> dict:
    """Keyword arguments that keep attention inside each packed document.

    flash_attention_2 (GPU): the batch is flattened and the kernel's variable-length path gets the piece
    boundaries. Otherwise encoders get block-diagonal (and block-diagonal sliding-window) masks, and
    decoders get restarting position ids, from which transformers builds block-diagonal causal masks.
    """
    input_ids, doc_ids, position_ids = batch["input_ids"], batch["doc_ids"], batch["position_ids"]
    config = model.config
    if config._attn_implementation == "flash_attention_2":
        flat_positions = position_ids.reshape(1, -1)
        starts = torch.nonzero(flat_positions[0] == 0).flatten()
        total = torch.tensor([flat_positions.shape[1]], device=starts.device)
        cu_seqlens = torch.cat([starts, total]).to(torch.int32)
        longest = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
        return {
            "input_ids": input_ids.reshape(1, -1),
            "position_ids": flat_positions,
            "cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens,
            "max_length_q": longest, "max_length_k": longest,
            **({} if encoder else {"use_cache": False}),
        }
    if not encoder:
        # Without a cache, transformers reads the packing from the restarting position ids.
        return {"input_ids": input_ids, "position_ids": position_ids, "use_cache": False}
    # Only shape, dtype and device of the embeddings matter to the mask builders.
    shape_only = torch.empty(*input_ids.shape, 0, device=input_ids.device)
    same_document = packed_sequence_mask_function(doc_ids)
    masks = {
        "full_attention": create_bidirectional_mask(config, shape_only, None, and_mask_function=same_document),
        "sliding_attention": create_bidirectional_sliding_window_mask(
            config, shape_only, None, and_mask_function=same_document
        ),
    }
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": masks}


class PretrainingModule(nn.Module):
    """Wraps an Ettin MLM/CLM model so one forward returns (loss sum, targets, correct predictions).

    The vocabulary projection runs on target positions only (masked tokens for MLM/MNTP), and the loss
    is a sum so the loop can normalise by the global number of targets across micro-batches and processes.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.encoder = model.config.model_type == "modernbert"

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = packed_attention_inputs(self.model.model, batch, self.encoder)
        hidden = self.model.model(**inputs).last_hidden_state.reshape(*batch["labels"].shape, -1)
        labels = batch["labels"]
        selected = labels != -100
        head = self.model.head if self.encoder else self.model.lm_head
        logits = self.model.decoder(head(hidden[selected]))
        targets = labels[selected]
        loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
        correct = (logits.detach().argmax(-1) == targets).sum()
        return loss_sum, selected.sum(), correct
