"""An Ettin (or any masked-LM) encoder as an lm-evaluation-harness model, scored by the release's masked rule.

    import lm_eval
    from ettin_ft.lm_eval_model import EncoderLM

    results = lm_eval.simple_evaluate(model=EncoderLM("runs/pretrain-enc/final"), tasks=["arc_easy"])

Importing this module also registers it as ``ettin-encoder``:
``lm_eval.simple_evaluate(model="ettin-encoder", model_args="pretrained=encoder-150m,encoder_scoring=pll")``.
Decoders need nothing of ours there: lm-eval's ``hf`` model with ``add_bos_token=True`` is the rule
``ettin_ft.zeroshot`` follows for them.
"""

from __future__ import annotations

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from .errors import EttinError
from .models import load_model, load_tokenizer, locate_model
from .runtime import choose_runtime
from .scoring import Request, Scorer, encode_request, trained_with_mntp


@register_model("ettin-encoder")
class EncoderLM(TemplateLM):
    """``pretrained``: anything the recipes take as --model, or a loaded masked-LM model with ``tokenizer=``.
    ``mntp=None`` reads it from a local pretraining run's config.yaml."""

    backend = "causal"  # lm-eval's split: context and continuation encoded together

    def __init__(self, pretrained, tokenizer=None, batch_size: int = 32, encoder_scoring: str = "l2r",
                 extra_masks: int = 2, score_sep: bool = False, mntp: bool | None = None, device: str | None = None):
        super().__init__()
        if isinstance(pretrained, str):
            located = locate_model(pretrained, ("encoder",), purpose="masked zero-shot scoring")
            model = load_model(located).to(choose_runtime(device, "fp32").device)
            tokenizer = load_tokenizer(located)
            if mntp is None:
                mntp = located.ref.local and trained_with_mntp(located.ref.path)
        elif tokenizer is None:
            raise EttinError("EncoderLM: a loaded model needs its tokenizer= too")
        else:
            model = pretrained
        self.tokenizer = tokenizer
        self.scorer = Scorer(model, tokenizer, "encoder", int(batch_size), encoder_scoring, int(extra_masks),
                             bool(score_sep), bool(mntp))

    @property
    def eot_token_id(self) -> int:
        return self.scorer.sep

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer(string, add_special_tokens=False)["input_ids"]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        # An empty context stays empty ([CLS], then the masks) rather than becoming lm-eval's prefix token.
        return self.scorer.score([encode_request(self.tokenizer, *request.args) for request in requests],
                                 desc="masked scoring")

    def _loglikelihood_tokens(self, requests, **kwargs) -> list[tuple[float, bool]]:
        return self.scorer.score([Request(tuple(context), tuple(continuation)) for _, context, continuation in requests],
                                 desc="masked scoring")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """A whole text's log-likelihood (perplexity tasks), in windows of half the model's length, each token
        scored with as much of the text before it as fits."""
        window = max(1, self.scorer.max_length // 2)
        totals = []
        for (text,) in (request.args for request in requests):
            ids = tuple(self.tok_encode(text))
            windows = [Request(ids[:start], ids[start:start + window]) for start in range(0, len(ids), window)]
            totals.append(sum(total for total, _ in self.scorer.score(windows, desc="masked scoring")))
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise EttinError("an encoder does not generate text: run generative lm-eval tasks on a decoder (lm-eval's "
                         "hf model); encoders score log-likelihood tasks")
