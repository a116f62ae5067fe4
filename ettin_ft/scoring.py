"""Log-likelihood of a continuation after a context, scored the same way for both architectures.

- Decoders: the log-likelihood of the continuation given BOS + context, as lm-evaluation-harness's ``hf`` model
  with ``add_bos_token=True``.
- Encoders, ``l2r`` (the Ettin release's rule, from its fork of lm-eval): continuation token i is read at the
  first mask of ``[CLS] context cont[:i] [MASK]×(1+K) [SEP]``; a model trained with MNTP reads the position
  before that mask. ``pll`` (Salazar et al. 2020, an ablation): each continuation token masked alone in
  ``[CLS] context continuation [SEP]``.

Both score exactly the continuation tokens of ``encode_request``. Every (request, position) becomes a row; rows of
many requests are batched longest first with padding and summed per request in their own order, so a score depends
on neither the batch size nor the order of the requests. ``ettin_ft.lm_eval_model.EncoderLM`` puts the
encoder rule behind lm-evaluation-harness's model interface.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .config import read_yaml
from .errors import EttinError

ENCODER_SCORING = ("l2r", "pll")


@dataclass(frozen=True)
class Request:
    context: tuple[int, ...]
    continuation: tuple[int, ...]


def encode_request(tokenizer, context: str, continuation: str) -> Request:
    """lm-eval's split: trailing whitespace of the context moves into the continuation, and the continuation's
    ids are ``ids(context + continuation)[len(ids(context)):]`` (no special tokens), so a word keeps the tokens
    it has in running text."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
    return Request(tuple(ids[:len(context_ids)]), tuple(ids[len(context_ids):]))


@dataclass(frozen=True)
class Row:
    """One forward-pass row: read log p(targets[j]) at positions[j]."""

    request: int
    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    targets: tuple[int, ...]


def trained_with_mntp(path: str) -> bool:
    """Whether a local model folder comes from an MNTP pretraining run: its run's config.yaml (beside final/ and
    checkpoint-N/, or in the folder itself) says ``objective: mntp``."""
    for config_file in (os.path.join(path, "config.yaml"), os.path.join(path, os.pardir, "config.yaml")):
        if os.path.isfile(config_file):
            return read_yaml(config_file).get("objective") == "mntp"
    return False


def max_length_of(model, tokenizer) -> int:
    limits = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    return min(limit for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000)


class Scorer:
    """Sum of log-probabilities (and whether every token is the greedy choice) of continuations."""

    def __init__(self, model, tokenizer, arch: str, batch_size: int = 32, encoder_scoring: str = "l2r",
                 extra_masks: int = 2, score_sep: bool = False, mntp: bool = False):
        if encoder_scoring not in ENCODER_SCORING:
            raise EttinError(f"--encoder-scoring {encoder_scoring!r}: expected one of {', '.join(ENCODER_SCORING)}")
        if batch_size < 1 or extra_masks < 0:
            raise EttinError(f"--batch-size must be at least 1 and --extra-masks at least 0; found {batch_size} and {extra_masks}")
        self.model, self.arch, self.batch_size = model.eval(), arch, batch_size
        self.encoder_scoring, self.extra_masks, self.score_sep, self.mntp = encoder_scoring, extra_masks, score_sep, mntp
        self.max_length = max_length_of(model, tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if arch == "decoder":
            self.prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            if self.prefix is None:
                raise EttinError("the decoder's tokenizer has neither a BOS nor an EOS token to start the context with")
        else:
            self.cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
            self.sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
            self.mask = tokenizer.mask_token_id
            if None in (self.cls, self.sep, self.mask):
                raise EttinError("the encoder's tokenizer needs [CLS], [SEP] and [MASK] tokens (or BOS/EOS and a mask) "
                                 "for masked scoring")

    def _fit(self, context: tuple[int, ...], rest: int) -> tuple[int, ...]:
        """The context cut from the left so that ``rest`` more tokens fit in the model's length."""
        room = self.max_length - rest
        if room < 0:
            raise EttinError(f"a continuation of {rest} tokens does not fit in the model's {self.max_length}-token window")
        return context[len(context) - room:] if len(context) > room else context

    def rows(self, index: int, request: Request) -> list[Row]:
        context, continuation = request.context, request.continuation
        if not continuation:
            raise EttinError("an empty continuation: nothing to score (check the task's choices)")
        if self.arch == "decoder":
            context = self._fit((self.prefix, *context), len(continuation) - 1)
            tokens = (context + continuation)[:-1]
            return [Row(index, tokens, tuple(range(len(context) - 1, len(tokens))), continuation)]
        targets = continuation + ((self.sep,) if self.score_sep else ())
        shift = 1 if self.mntp else 0  # MNTP predicts a masked token from the position before it
        if self.encoder_scoring == "l2r":
            masks = (self.mask,) * (1 + self.extra_masks)
            rows = []
            for i, target in enumerate(targets):
                context_i = self._fit(context, 1 + i + len(masks) + 1)
                tokens = (self.cls, *context_i, *continuation[:i], *masks, self.sep)
                rows.append(Row(index, tokens, (1 + len(context_i) + i - shift,), (target,)))
            return rows
        context = self._fit(context, 1 + len(continuation) + 1)
        sentence = (self.cls, *context, *continuation, self.sep)
        rows = []
        for i, target in enumerate(targets):
            at = 1 + len(context) + i
            rows.append(Row(index, sentence[:at] + (self.mask,) + sentence[at + 1:], (at - shift,), (target,)))
        return rows

    @torch.inference_mode()
    def score(self, requests: list[Request], desc: str = "scoring") -> list[tuple[float, bool]]:
        """(log-likelihood, every token greedy) per request."""
        rows = [row for index, request in enumerate(requests) for row in self.rows(index, request)]
        row_log_probs, row_greedy = [0.0] * len(rows), [True] * len(rows)
        order = sorted(range(len(rows)), key=lambda k: -len(rows[k].tokens))  # little padding per batch
        device = next(self.model.parameters()).device
        for start in tqdm(range(0, len(order), self.batch_size), desc=desc, leave=False, dynamic_ncols=True):
            batch = order[start:start + self.batch_size]
            width = len(rows[batch[0]].tokens)
            input_ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            which, where, targets = [], [], []
            for b, k in enumerate(batch):
                row = rows[k]
                input_ids[b, :len(row.tokens)] = torch.tensor(row.tokens)
                attention_mask[b, :len(row.tokens)] = 1
                which += [b] * len(row.positions)
                where += row.positions
                targets += row.targets
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            log_probs = logits[torch.tensor(which), torch.tensor(where)].float().log_softmax(-1).cpu()
            targets = torch.tensor(targets)
            picked = log_probs.gather(-1, targets[:, None])[:, 0].tolist()
            greedy = (log_probs.argmax(-1) == targets).tolist()
            offset = 0
            for k in batch:
                count = len(rows[k].positions)
                row_log_probs[k] = sum(picked[offset:offset + count])
                row_greedy[k] = all(greedy[offset:offset + count])
                offset += count
        totals, all_greedy = [0.0] * len(requests), [True] * len(requests)
        for k, row in enumerate(rows):  # each request's rows in its own order
            totals[row.request] += row_log_probs[k]
            all_greedy[row.request] = all_greedy[row.request] and row_greedy[k]
        return list(zip(totals, all_greedy))
