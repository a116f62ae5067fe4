"""Save the classifier a classify run starts from at --seed S on this library stack, to train another stack from the
same start (``python -m ettin_ft.classify --init-from OUT``).

transformers draws a new classification head after ``set_seed(S)``; two transformers releases can draw it from the
random stream differently, so a row compared across stacks differs by the draw as well as by the stack. Training
each stack from the other's saved start separates the two (BENCHMARKS.md, "The stack move").

    python benchmarks/classifier_start.py runs/quality-old/pretrain-decoder/final 0 draws/old-seed0 --num-labels 30
"""

import argparse

import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the pretrained model folder the classify run fine-tunes")
    parser.add_argument("seed", type=int, help="the classify run's --seed")
    parser.add_argument("output", help="folder for the classifier as drawn (weights and tokenizer)")
    parser.add_argument("--num-labels", type=int, required=True)
    args = parser.parse_args()
    transformers.set_seed(args.seed)  # as the recipe does before it builds the model
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=args.num_labels,
                                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    print(f"transformers {transformers.__version__}, seed {args.seed}: classifier weights sum "
          f"{model.classifier.weight.sum().item():.6f} -> {args.output}")


if __name__ == "__main__":
    main()
