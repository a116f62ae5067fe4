"""Fill in [MASK] with an Ettin encoder: the top-k tokens and their probabilities.

    python -m ettin_ft.fill_mask --model 150m "The capital of France is [MASK]."

    from ettin_ft.fill_mask import fill_mask
    fill_mask("runs/pretrain/final", "The capital of France is [MASK].")  # [("Paris", 0.41), ...]
"""

from __future__ import annotations


import torch

from .models import load_model, load_tokenizer, locate_model
from .errors import ArgumentParser, EttinError, cli_entry
from .process_state import transformers_progress_bars


def fill_mask(model, text: str, top_k: int = 5, tokenizer=None) -> list[tuple[str, float]]:
    """The ``top_k`` (token, probability) pairs for the single mask in ``text``.

    ``model`` is a loaded masked LM (with ``tokenizer``) or anything ``--model`` accepts.
    """
    if isinstance(model, str):
        located = locate_model(model, ("encoder",), hint=" (for a decoder use python -m ettin_ft.generate)")
        model, tokenizer = load_model(located).eval(), load_tokenizer(located)
    mask = tokenizer.mask_token
    if text.count(mask) != 1:
        raise EttinError(f"the text must contain {mask} exactly once; found it {text.count(mask)} times in {text!r}")
    encoded = tokenizer(text, return_tensors="pt").to(next(model.parameters()).device)
    with torch.inference_mode():
        logits = model(**encoded).logits[0]
    position = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0]
    probabilities = logits[position].float().softmax(-1)
    top = probabilities.topk(top_k)
    return [(tokenizer.decode([i]).strip(), float(p)) for p, i in zip(top.values, top.indices)]


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m ettin_ft.fill_mask",
                                     description="Predict the [MASK] token with an Ettin encoder.")
    parser.add_argument("text", help='text with one [MASK], e.g. "The capital of France is [MASK]."')
    parser.add_argument("--model", default="150m", help="Ettin encoder: short name, hub id[@revision] or local folder")
    parser.add_argument("--top-k", type=int, default=5, help="how many candidates to print")
    args = parser.parse_args(argv)
    with transformers_progress_bars(shown=False):  # the answer is the output
        predictions = fill_mask(args.model, args.text, top_k=args.top_k)
    for token, probability in predictions:
        print(f"{probability:.4f}\t{token}")


if __name__ == "__main__":
    main()
