"""The main job, offline in minutes: build a paired encoder/decoder and fine-tune every recipe end to end.

On the built-in synthetic world: train one tokenizer, pretrain a tiny encoder (MLM) and its paired decoder
(CLM) — same shape, data and recipe, the Ettin idea in miniature — then fine-tune dense, ColBERT, SPLADE
and reranker models from the encoder, SFT and LoRA chat models from the decoder, and a dense embedder from
the decoder too (mean-pooled, as the encoder's) to compare with it, and a question-topic classifier and an
entity tagger from each. Every model is evaluated before and after on held-out data, and both pretrained models are scored
zero-shot on facts of the world (which of four employers someone works for, ...). DIR gets results.json,
REPORT.md and plots. Each stage's folder is an ordinary model run the recipe commands accept; a rerun with the
same DIR skips finished stages.

    python -m ettin_ft.quickstart --output-dir runs/quickstart
    python -m ettin_ft.quickstart --output-dir runs/big --people 300 --steps 600 --stages pretrain-encoder,dense
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from .config import parse_config, to_dict
from .errors import EttinError, cli_entry
from .folders import atomic_folder
from .process_state import transformers_verbosity
from .run_folder import RunFolder


@dataclass
class QuickstartConfig:
    output_dir: str = field(default="runs/quickstart", metadata={"help": "where every stage's folder and the report go"})
    size: str = field(default="tiny", metadata={"help": "model size of the encoder/decoder pair (tiny builds in seconds)"})
    people: int = field(default=100, metadata={"help": "people in the synthetic world (20% held out for evaluation)"})
    steps: int = field(default=300, metadata={"help": "pretraining steps of each base model"})
    finetune_scale: float = field(default=1.0, metadata={"help": "multiply every fine-tuning stage's steps"})
    stages: str = field(default="all", metadata={"help": "comma-separated subset of the stages (their inputs run too)"})
    rerank_people: int = field(default=1000, metadata={"help": "people behind the reranker's training examples (a second world: a cross-encoder learns to match names only from many different ones)"})
    vocab_size: int = field(default=1024, metadata={"help": "tokenizer vocabulary, shared by encoder and decoder"})
    bias_data: str | None = field(default=None, metadata={"help": "WinoGender folder (e.g. ../shared/data/bias/winogender): the report adds the bias probe of both pretrained models"})
    seed: int = 0


@dataclass
class Stage:
    name: str
    description: str
    base: str | None  # the stage whose model this one starts from
    metric: str  # the metric this stage must improve
    higher_is_better: bool
    run: Callable[["Quickstart", str], None]


class Quickstart:
    """Runs the stages in order into ``config.output_dir``; each writes DIR/<stage>/ like its recipe command."""

    def __init__(self, config: QuickstartConfig):
        self.config = config
        self.dir = config.output_dir
        self.world = os.path.join(self.dir, "world")

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def steps(self, base: int) -> int:
        return max(1, round(base * self.config.finetune_scale))

    def model_of(self, stage: str) -> str:
        return self.path(stage, "final")

    # ----------------------------------------------------------------------------------- the stages

    def prepare_world(self) -> None:
        """The synthetic world and one tokenizer for both models (the Ettin pair shares its tokenizer)."""
        from .data.synthetic import SyntheticWorld, write_jsonl
        from .tokenizer import train_tokenizer

        if os.path.isfile(self.path("tokenizer", "tokenizer.json")):
            return
        world = SyntheticWorld(people=self.config.people, seed=self.config.seed)
        world.write(self.world)
        write_jsonl(os.path.join(self.world, "rerank_train_others.jsonl"),
                    world.rerank_examples_about_others(self.config.rerank_people))
        with atomic_folder(self.path("tokenizer")) as staging:
            train_tokenizer(world.pretraining_texts(), vocab_size=self.config.vocab_size).save_pretrained(staging)

    def pretrain(self, stage: str, arch: str) -> None:
        from .pretrain import PretrainConfig
        from .training.loop import run_pretraining

        run_pretraining(PretrainConfig(
            arch=arch, size=self.config.size, data=os.path.join(self.world, "pretrain.txt"),
            tokenizer=self.path("tokenizer"), output_dir=self.path(stage), max_steps=self.config.steps,
            seq_len=128, batch_size=8, warmup_steps=5, eval_documents=20, eval_every=0, save_every=0,
            report_to="none", num_workers=0, seed=self.config.seed,
        ))

    def training_args(self, arguments_class, stage: str, steps: int, lr: float, batch: int, warmup: float = 0, **extra):
        import torch  # the fine-tuning stages run on a GPU when there is one, as pretraining does

        return arguments_class(output_dir=self.path(stage), max_steps=self.steps(steps), learning_rate=lr,
                               per_device_train_batch_size=batch, warmup_steps=warmup, logging_steps=5,
                               save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
                               seed=self.config.seed, **extra)

    def retrieval_data(self) -> dict:
        return {"data": os.path.join(self.world, "retrieval_train.jsonl"),
                "eval_beir": os.path.join(self.world, "retrieval_eval"), "held_out": 20}

    def dense(self, stage: str, base: str) -> None:
        from sentence_transformers import SentenceTransformerTrainingArguments

        from .dense import DenseConfig, train_dense

        train_dense(DenseConfig(model=self.model_of(base), **self.retrieval_data()),
                    self.training_args(SentenceTransformerTrainingArguments, stage, 60, 1e-3, 16,
                                       batch_sampler="no_duplicates"))

    def colbert(self, stage: str) -> None:
        from sentence_transformers import MultiVectorEncoderTrainingArguments

        from .colbert import ColbertConfig, train_colbert

        train_colbert(ColbertConfig(model=self.model_of("pretrain-encoder"), document_length=96, **self.retrieval_data()),
                      self.training_args(MultiVectorEncoderTrainingArguments, stage, 25, 1e-3, 16))

    def sparse(self, stage: str) -> None:
        from sentence_transformers.sparse_encoder import SparseEncoderTrainingArguments

        from .sparse import SparseConfig, train_sparse

        train_sparse(SparseConfig(model=self.model_of("pretrain-encoder"), **self.retrieval_data()),
                     self.training_args(SparseEncoderTrainingArguments, stage, 150, 5e-4, 32,
                                        batch_sampler="no_duplicates"))

    def rerank(self, stage: str) -> None:
        from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

        from .rerank import RerankConfig, train_rerank

        # Labelled rows (the positive, a name-sharing negative, two others) about a larger population: on the
        # world's own training people the cross-encoder memorises names instead of learning to match them.
        data = {**self.retrieval_data(), "data": os.path.join(self.world, "rerank_train_others.jsonl")}
        train_rerank(RerankConfig(model=self.model_of("pretrain-encoder"), num_negatives=3, **data),
                     self.training_args(CrossEncoderTrainingArguments, stage, 1000, 1e-3, 32, warmup=0.1))

    def sft(self, stage: str, lora: bool) -> None:
        from trl import SFTConfig

        from .sft import SftRecipeConfig, train_sft

        args = self.training_args(SFTConfig, stage, 100, 3e-3, 4, packing=True, eos_token="<|im_end|>", max_length=256,
                                  gradient_checkpointing=False, bf16=False)
        train_sft(SftRecipeConfig(model=self.model_of("pretrain-decoder"), data=os.path.join(self.world, "sft_train.jsonl"),
                                  held_out=40, eval_generations=40, max_new_tokens=24, lora=lora), args)

    def classify(self, stage: str, base: str) -> None:
        from transformers import TrainingArguments

        from .classify import ClassifyConfig, train_classify

        # Which attribute a question asks for, judged on questions about held-out people. (The world's true/false
        # claims need knowledge or reading that tiny models do not reach in minutes: see BENCHMARKS.md.)
        train_classify(ClassifyConfig(model=self.model_of(base), data=os.path.join(self.world, "topics_train.jsonl"),
                                      eval_data=os.path.join(self.world, "topics_test.jsonl")),
                       self.training_args(TrainingArguments, stage, 30, 1e-3, 32))

    def tag(self, stage: str, base: str) -> None:
        from transformers import TrainingArguments

        from .tag import TagConfig, train_tag

        # People, cities, universities and employers, tagged in the biographies of held-out people.
        train_tag(TagConfig(model=self.model_of(base), data=os.path.join(self.world, "entities_train.jsonl"),
                            eval_data=os.path.join(self.world, "entities_test.jsonl")),
                  self.training_args(TrainingArguments, stage, 60, 1e-3, 16))


STAGES = [
    Stage("pretrain-encoder", "tiny encoder, MLM on the world's biographies", None, "eval_loss", False,
          lambda q, s: q.pretrain(s, "encoder")),
    Stage("pretrain-decoder", "its paired decoder, CLM on the same data", None, "eval_loss", False,
          lambda q, s: q.pretrain(s, "decoder")),
    Stage("dense", "dense embedder from the encoder (mean pooling)", "pretrain-encoder", "ndcg@10", True,
          lambda q, s: q.dense(s, "pretrain-encoder")),
    Stage("colbert", "ColBERT from the encoder (contrastive)", "pretrain-encoder", "ndcg@10", True,
          lambda q, s: q.colbert(s)),
    Stage("sparse", "SPLADE from the encoder's MLM head", "pretrain-encoder", "ndcg@10", True,
          lambda q, s: q.sparse(s)),
    Stage("rerank", "cross-encoder reranker from the encoder (BM25 top 100)", "pretrain-encoder", "ndcg@10", True,
          lambda q, s: q.rerank(s)),
    Stage("sft", "chat model from the decoder (full SFT)", "pretrain-decoder", "held_out_loss", False,
          lambda q, s: q.sft(s, lora=False)),
    Stage("lora", "chat model from the decoder (LoRA)", "pretrain-decoder", "held_out_loss", False,
          lambda q, s: q.sft(s, lora=True)),
    Stage("dense-decoder", "dense embedder from the decoder (mean pooling)", "pretrain-decoder", "ndcg@10", True,
          lambda q, s: q.dense(s, "pretrain-decoder")),
    Stage("classify", "question-topic classifier from the encoder (mean pooling)", "pretrain-encoder", "accuracy",
          True, lambda q, s: q.classify(s, "pretrain-encoder")),
    Stage("classify-decoder", "question-topic classifier from the decoder (last token)", "pretrain-decoder",
          "accuracy", True, lambda q, s: q.classify(s, "pretrain-decoder")),
    Stage("tag", "entity tagger from the encoder (people, cities, universities, employers)", "pretrain-encoder", "f1",
          True, lambda q, s: q.tag(s, "pretrain-encoder")),
    Stage("tag-decoder", "entity tagger from the decoder (each word seen with its left context only)",
          "pretrain-decoder", "f1", True, lambda q, s: q.tag(s, "pretrain-decoder")),
]
STAGE_NAMES = [stage.name for stage in STAGES]


def selected_stages(spec: str) -> list[Stage]:
    """The stages asked for, with the pretraining stages they start from, in pipeline order."""
    if spec == "all":
        return list(STAGES)
    wanted = {name.strip() for name in spec.split(",") if name.strip()}
    unknown = sorted(wanted - set(STAGE_NAMES))
    if unknown:
        raise EttinError(f"--stages: unknown stage(s) {', '.join(unknown)}; expected some of {', '.join(STAGE_NAMES)}")
    by_name = {stage.name: stage for stage in STAGES}
    wanted |= {by_name[name].base for name in wanted if by_name[name].base}
    return [stage for stage in STAGES if stage.name in wanted]


def stage_record(quickstart: Quickstart, stage: Stage) -> dict | None:
    """The finished stage's entry for results.json, or None if it has not finished."""
    folder = stage_folder(quickstart, stage)
    if not folder.finished:
        return None
    with open(os.path.join(folder.path, folder.marker), encoding="utf-8") as handle:
        return json.load(handle)


def stage_folder(quickstart: Quickstart, stage: Stage) -> RunFolder:
    """A stage's folder: its recipe's run folder, finished once the stage's record (stage.json) is written."""
    return RunFolder(quickstart.path(stage.name), marker="stage.json")


def run_stage(quickstart: Quickstart, stage: Stage) -> dict:
    folder = stage_folder(quickstart, stage)
    shutil.rmtree(folder.path, ignore_errors=True)  # an interrupted earlier attempt
    started = time.perf_counter()
    stage.run(quickstart, stage.name)
    wall_time = time.perf_counter() - started
    with open(os.path.join(folder.path, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    before, after = metrics["before"], metrics["after"]
    change = after[stage.metric] - before[stage.metric]
    record = {"stage": stage.name, "description": stage.description, "base": stage.base, "metric": stage.metric,
              "higher_is_better": stage.higher_is_better,
              "before": {k: v for k, v in before.items() if isinstance(v, (int, float))},
              "after": {k: v for k, v in after.items() if isinstance(v, (int, float))},
              "improved": change > 0 if stage.higher_is_better else change < 0,
              "wall_time_s": round(wall_time, 1), "output": os.path.join(stage.name, "final")}  # relative to DIR
    folder.mark_finished(record)
    return record


def bias_probes(quickstart: Quickstart, stages: list[Stage]) -> dict:
    """The WinoGender probe of each pretrained model (zero-shot, seconds) when --bias-data is given."""
    if not quickstart.config.bias_data:
        return {}
    from .bias import BiasConfig, run_probe

    results = {}
    for stage in (s for s in stages if s.name.startswith("pretrain-")):
        arch = stage.name.removeprefix("pretrain-")
        folder = quickstart.path(f"bias-{arch}")
        if RunFolder(folder).finished:
            with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as handle:
                metrics = json.load(handle)
        else:
            metrics = run_probe(BiasConfig(model=quickstart.model_of(stage.name), data=quickstart.config.bias_data,
                                           output_dir=folder))
        results[arch] = {k: metrics[k] for k in ("preference", "gotcha", "bls_pearson_r", "sentences")}
        print(f"    bias probe, {arch}: prefers male {metrics['preference']['male']:.1%}, female "
              f"{metrics['preference']['female']:.1%}, neutral {metrics['preference']['neutral']:.1%}", flush=True)
    return results


def untrained_model(quickstart: Quickstart, arch: str) -> str:
    """A folder with the pair's shape and tokenizer, freshly initialised: the "before pretraining" model."""
    from transformers import AutoTokenizer

    from .models import build_model

    folder = quickstart.path(f"untrained-{arch}")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        import torch

        tokenizer = AutoTokenizer.from_pretrained(quickstart.model_of(f"pretrain-{arch}"))
        torch.manual_seed(quickstart.config.seed)
        with atomic_folder(folder) as staging:
            build_model(quickstart.config.size, arch, tokenizer=tokenizer).save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    return folder


def zeroshot_probes(quickstart: Quickstart, stages: list[Stage]) -> dict:
    """Zero-shot facts of the world (which of four employers, birth cities, universities, majors someone has, seen
    in pretraining) for each pretrained model, before pretraining and after; the encoder by both masked rules."""
    from .zeroshot import ZeroShotConfig, run_zeroshot

    results = {}
    for stage in (s for s in stages if s.name.startswith("pretrain-")):
        arch = stage.name.removeprefix("pretrain-")
        for scoring in ("l2r", "pll") if arch == "encoder" else ("log-likelihood",):
            label = f"encoder ({scoring})" if arch == "encoder" else arch
            entry = {}
            for when, model in (("before", untrained_model(quickstart, arch)), ("after", quickstart.model_of(stage.name))):
                folder = quickstart.path("zeroshot", f"{arch}-{scoring}-{when}" if arch == "encoder" else f"{arch}-{when}")
                if RunFolder(folder).finished:
                    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as handle:
                        metrics = json.load(handle)
                else:
                    metrics = run_zeroshot(ZeroShotConfig(model=model, data=os.path.join(quickstart.world, "zeroshot"),
                                                          output_dir=folder, encoder_scoring=scoring if arch == "encoder" else "l2r"))
                entry[when] = {**metrics["average"], **{f"{task}_acc": values["acc"] for task, values in metrics["tasks"].items()}}
                entry["random"] = statistics.fmean(values["random"] for values in metrics["tasks"].values())
                entry["items"] = sum(values["items"] for values in metrics["tasks"].values())
            results[label] = entry
            print(f"    zero-shot facts, {label}: acc {entry['before']['acc']:.3f} before pretraining -> "
                  f"{entry['after']['acc']:.3f} after (chance {entry['random']:.3f})", flush=True)
    return results


def check_settings(config: QuickstartConfig) -> None:
    """Record the settings in DIR/quickstart.json; finished stages are only reused under the same ones."""
    settings = {k: v for k, v in to_dict(config).items() if k not in ("output_dir", "stages", "bias_data")}
    path = os.path.join(config.output_dir, "quickstart.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            earlier = json.load(handle)
        changed = [f"{k} {earlier.get(k)} → {v}" for k, v in settings.items() if earlier.get(k) != v]
        if changed:
            raise EttinError(f"{config.output_dir} holds a quickstart with other settings ({', '.join(changed)}); "
                             "choose another --output-dir")
        return
    os.makedirs(config.output_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(settings, handle, indent=2)


def run_quickstart(config: QuickstartConfig) -> dict:
    """Run (or finish) the quickstart in ``config.output_dir``; returns the results written to results.json."""
    from transformers.utils import logging as hf_logging

    from .report import write_quickstart_report

    stages = selected_stages(config.stages)
    if config.bias_data:  # checked before hours of training, not after
        from .bias import load_winogender

        load_winogender(config.bias_data)
    check_settings(config)
    quickstart = Quickstart(config)
    started = time.perf_counter()
    with transformers_verbosity(hf_logging.ERROR):  # the stage headers and progress bars tell the story
        quickstart.prepare_world()
        records = []
        for number, stage in enumerate(stages, 1):
            record = stage_record(quickstart, stage)
            header = f"[{number}/{len(stages)}] {stage.name}: {stage.description}"
            if record is not None:
                print(f"{header} — finished earlier, skipped", flush=True)
            else:
                print(header, flush=True)
                record = run_stage(quickstart, stage)
            records.append(record)
            print(f"    {stage.metric}: {record['before'][stage.metric]:.4f} -> {record['after'][stage.metric]:.4f}"
                  f" ({record['wall_time_s']:.0f} s)", flush=True)
        results = {"config": to_dict(config), "stages": records, "bias": bias_probes(quickstart, stages),
                   "zeroshot": zeroshot_probes(quickstart, stages),
                   "wall_time_s": round(time.perf_counter() - started, 1),
                   "stages_wall_time_s": round(sum(r["wall_time_s"] for r in records), 1)}
    write_quickstart_report(config.output_dir, results)
    return results


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, dry_run = parse_config(
        QuickstartConfig, argv=argv, prog="python -m ettin_ft.quickstart",
        description="Offline quickstart: build a tiny Ettin encoder/decoder pair on synthetic data and fine-tune "
        f"every recipe from it, with a report. Stages: {', '.join(STAGE_NAMES)}.",
    )
    stages = selected_stages(config.stages)
    if dry_run:
        print("\n".join(f"{s.name}: {s.description}" for s in stages))
        return
    results = run_quickstart(config)
    from .report import results_table

    print("\n" + results_table(results))
    print(f"\nreport: {os.path.join(config.output_dir, 'REPORT.md')} (wall time {results['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
