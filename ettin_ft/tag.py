"""Token classification (NER, tagging): an Ettin encoder or decoder → AutoModelForTokenClassification.

Words come pre-split (jsonl rows of tokens and tags, a folder of train/validation jsonl, or CoNLL text); the first
sub-token of each word carries its tag (``--label-all-tokens``: every sub-token). An encoder tags with
ModernBertForTokenClassification; a decoder with ettin-ft's ModernBertDecoderForTokenClassification, where each
token sees only its left context (``--bidirectional``: the decoder without its causal mask, as LLM2Vec). Scores are
seqeval's entity-level micro F1, precision and recall (conlleval mode) and token accuracy, before and after.

    python -m ettin_ft.tag --model 150m --data ../shared/data/token_classification/wnut17 --output-dir runs/wnut17
    python -m ettin_ft.tag --model decoder-150m --data train.conll --eval-data dev.conll --seeds 0,1,2 --output-dir runs/ner
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from transformers import (AutoConfig, AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer,
                          TrainingArguments, set_seed)

from .data.tagging import TaggingData, load_tagging_data, tokenize_words
from .errors import EttinError, cli_entry
from .evaluation import tagging_metrics, word_predictions
from .lora import LoraArguments, peft_config
from .models import describe_arch, load_checked
from .recipe import (RecipeConfig, locate_base_model, parse_recipe, prepare_run, print_dry_run, release_recipe,
                     release_settings)
from .recipe_data import column_mapping
from .run_folder import RunFolder, SkipLastCheckpoint, is_main_process, publish_with_head, write_results
from .runtime import model_kwargs
from .seeds import train_each_seed
from .tokenizer import encode_words_as_in_text, set_post_processing

DEFAULTS, _ = release_settings("tag")


@dataclass
class TagConfig(LoraArguments, RecipeConfig):
    INTENDED_USE = "token classification (NER, tagging): a tag per word with AutoModelForTokenClassification or pipeline('token-classification')"
    PIPELINE_TAG = "token-classification"
    RELEASE = "tag"
    REQUIRES = {name: "lora" for name in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")}

    eval_data: str | None = field(default=None, metadata={"help": "evaluation sentences (default: the folder's validation.jsonl, else held-out --data sentences)"})
    labels: str | None = field(default=None, metadata={"help": "labels.json, the tag names in order (default: the folder's labels.json, else the training tags with O first and the rest sorted)"})
    label_all_tokens: bool = field(default=False, metadata={"help": "label every sub-token of a word (B- becomes I- after the first), not only the first"})
    bidirectional: bool = field(default=False, metadata={"help": "decoders: fine-tune without the causal mask, so each token sees both sides (LLM2Vec's way of making an encoder of a decoder)"})
    seeds: str | None = field(default=None, metadata={"help": "e.g. '0,1,2': one run per seed in DIR/seed-N/, mean and std in DIR/metrics.json"})


def tagging_data(config: TagConfig) -> TaggingData:
    if not config.data:
        raise EttinError("--data is required: jsonl rows of tokens and tags, a folder with train.jsonl and "
                         "validation.jsonl, or a CoNLL file")
    return load_tagging_data(data=config.data, eval_data=config.eval_data, labels=config.labels,
                             max_samples=config.max_samples, held_out=config.held_out, data_config=config.data_config,
                             data_split=config.data_split, column_mapping=column_mapping(config))


def build_tagger(config: TagConfig, data: TaggingData, runtime):
    """(tagger, tokenizer, arch): the pretrained model with a new token-classification head sized to the tags."""
    located = locate_base_model(config, "tag", allowed=("encoder", "decoder"))
    ref, arch = located.ref, located.arch
    if config.bidirectional and not (arch == "decoder" and located.ettin):
        raise EttinError(f"--bidirectional applies to Ettin decoders; {ref.describe()} is {describe_arch(located.config)}"
                         f"{', which attends both ways already' if arch == 'encoder' else ''}")
    tokenizer = AutoTokenizer.from_pretrained(ref.path, revision=ref.revision)
    if located.ettin:
        set_post_processing(tokenizer, arch)
    encode_words_as_in_text(tokenizer)
    if arch == "decoder" and tokenizer.pad_token_id is None:
        raise EttinError(f"{ref.describe()}: batches of sentences need a pad token; its tokenizer has none")
    model_config = AutoConfig.from_pretrained(
        ref.path, revision=ref.revision, num_labels=len(data.label_names), pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(data.label_names)), label2id={name: i for i, name in enumerate(data.label_names)})
    if config.bidirectional:  # saved in the config, so the reloaded tagger attends both ways too
        model_config.bidirectional = True
    # A decoder's prediction head starts new (its checkpoint's is the LM head's), as in classify's default.
    model = load_checked(AutoModelForTokenClassification, ref, new=("head.",) if arch == "decoder" else (),
                         config=model_config, **model_kwargs(runtime))
    if config.lora:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(config, located, "TOKEN_CLS",
                                                  modules_to_save=["head", "classifier"] if located.ettin else None))
    return model, tokenizer, arch


def write_predictions(output_dir: str, sentences, predicted: list[list[str]]) -> None:
    """predictions.jsonl: each evaluation sentence's words, gold tags and predicted tags (main process)."""
    if is_main_process():
        with open(os.path.join(output_dir, "predictions.jsonl"), "w", encoding="utf-8") as handle:
            for tokens, tags, guess in zip(sentences["tokens"], sentences["tags"], predicted):
                handle.write(json.dumps({"tokens": tokens, "tags": tags, "predicted": guess}, ensure_ascii=False) + "\n")


def train_tag(config: TagConfig, args: TrainingArguments, runtime=None, dry_run=False, start_if_new=False):
    """Fine-tune a tagger as ``config`` says; returns it (with --seeds: the last seed's). With ``start_if_new``,
    --resume-from-checkpoint latest in a folder without checkpoints starts the run (one seed of several)."""
    if config.seeds and not dry_run:
        return train_each_seed(train_tag, config, args, runtime)
    args, runtime = prepare_run(config, args, runtime, start_if_new)
    set_seed(args.seed)  # before any model is built, so its new layers (and the "before" metrics) repeat
    data = tagging_data(config)  # every input check before the model loads
    model, tokenizer, _ = build_tagger(config, data, runtime)
    if dry_run:
        print_dry_run(config, args, model, data.train)
        return model
    train, evaluation = (tokenize_words(split, tokenizer, data.label_names, config.max_seq_length,
                                        config.label_all_tokens) for split in (data.train, data.eval))
    gold = data.eval["tags"]
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer), callbacks=[SkipLastCheckpoint()])
    with RunFolder(args.output_dir).tidy_on_failure():
        before, _ = tagging_metrics(gold, word_predictions(trainer, evaluation, data.label_names))
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        predicted = word_predictions(trainer, evaluation, data.label_names)
        after, per_type = tagging_metrics(gold, predicted)
        model = publish_with_head(trainer, tokenizer, config.lora)
        write_predictions(args.output_dir, data.eval, predicted)
        write_results(args.output_dir, config, args, before, after, trainer, extra={"per_type": per_type})
    return model


def release(output_dir: str, **overrides):
    """The release settings (configs/tag.yaml) as (TagConfig, TrainingArguments), as the command line resolves them;
    ``overrides`` name fields of either: ``train_tag(*release("runs/x", model="decoder-150m", data="ner/"))``."""
    return release_recipe(TagConfig, TrainingArguments, DEFAULTS, output_dir, overrides, "ettin_ft.tag")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, args, dry_run = parse_recipe(
        TagConfig, TrainingArguments, DEFAULTS, argv, "python -m ettin_ft.tag",
        "Fine-tune an Ettin encoder or decoder into a token tagger, e.g. NER (any TrainingArguments field is a flag).",
    )
    train_tag(config, args, dry_run=dry_run)


if __name__ == "__main__":
    main()
