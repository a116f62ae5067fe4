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

from ..models import arch_of


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
        self.encoder = arch_of(model.config) == "encoder"
        # FSDP's transformer-based wrapping reads the layer classes to shard from the module it is given.
        self._no_split_modules = model._no_split_modules

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = packed_attention_inputs(self.model.model, batch, self.encoder)
        hidden = self.model.model(**inputs).last_hidden_state.reshape(*batch["labels"].shape, -1)
        labels = batch["labels"]
        selected = labels != -100
        head = self.model.head if self.encoder else self.model.lm_head
        decoder = self.model.decoder
        loss_sum, correct = LinearCrossEntropy.apply(head(hidden[selected]), decoder.weight, decoder.bias, labels[selected])
        return loss_sum, selected.sum(), correct


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against ``targets``, one chunk of rows at a time.

    The (rows × vocabulary) logits are never held whole: each chunk's softmax becomes its gradient right
    away (the gradients are computed in the forward pass and scaled in the backward). At a 50k vocabulary
    this halves the memory traffic of the loss, which dominates a small decoder's step. Also returns the
    number of correct argmax predictions.
    """

    CHUNK_ROWS = 1024

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets):
        needs_grad = any(ctx.needs_input_grad[:3])
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_grad else None
        grad_bias = torch.zeros(weight.shape[0], device=weight.device, dtype=torch.float32) \
            if needs_grad and bias is not None else None
        loss = torch.zeros((), device=hidden.device, dtype=torch.float32)
        correct = torch.zeros((), device=hidden.device, dtype=torch.long)
        for start in range(0, hidden.shape[0], LinearCrossEntropy.CHUNK_ROWS):
            rows = slice(start, start + LinearCrossEntropy.CHUNK_ROWS)
            chunk, chunk_targets = hidden[rows], targets[rows]
            logits = F.linear(chunk, weight, bias).float()
            log_normalizer = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, chunk_targets[:, None]).squeeze(1)
            loss += (log_normalizer - picked).sum()
            correct += (logits.argmax(-1) == chunk_targets).sum()
            if needs_grad:
                probabilities = logits.sub_(log_normalizer[:, None]).exp_()  # in place: logits are done
                probabilities[torch.arange(len(chunk_targets), device=logits.device), chunk_targets] -= 1
                compute = probabilities.to(chunk.dtype)
                grad_hidden[rows] = compute @ weight.to(chunk.dtype)
                grad_weight.addmm_(compute.t().float(), chunk.float())
                if bias is not None:
                    grad_bias += probabilities.sum(0)
        if needs_grad:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype), grad_bias)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        return (grad_hidden * grad_loss.to(grad_hidden.dtype), grad_weight * grad_loss.to(grad_weight.dtype),
                grad_bias * grad_loss if grad_bias is not None else None, None)
