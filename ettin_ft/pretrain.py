"""Build or continue an Ettin encoder (MLM/MNTP) or decoder (CLM) — the Ettin recipe on accelerate.

    python -m ettin_ft.pretrain --arch encoder --size tiny --data ../shared/data/pretrain \
        --max-steps 200 --output-dir runs/tiny-encoder
    python -m ettin_ft.pretrain --config configs/pretrain/150m-encoder-phase1.yaml --data org/corpus \
        --max-steps 100000 --output-dir runs/150m      # same command under `accelerate launch` / `torchrun`

From scratch without --tokenizer, a tokenizer is trained on the data first and saved with the model.
The model and tokenizer go to DIR/final/, checkpoints to DIR/checkpoint-STEP/; --resume continues the
latest complete checkpoint in DIR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import dump_yaml, parse_config, to_dict
from .errors import EttinError, cli_entry
from .registry import SHAPES, shape_of

# Per-size peak learning rate and (fully decoupled) weight decay of the Ettin recipe.
PEAK_LR = {"tiny": 3e-3, "17m": 3e-3, "32m": 3e-3, "68m": 3e-3, "150m": 8e-4, "400m": 5e-4, "1b": 5e-4}
WEIGHT_DECAY = {"tiny": 3e-4, "17m": 3e-4, "32m": 3e-4, "68m": 3e-4, "150m": 1e-5, "400m": 1e-5, "1b": 5e-5}
# BERT masking of the Ettin recipe: the rate, then the shares of masked tokens that become [MASK] or a random token.
MASKING = {"mlm_probability": 0.3, "mask_replace_prob": 0.8, "random_replace_prob": 0.1}
TOKENIZER_DOCUMENTS = 200_000  # documents a tokenizer trained from scratch reads


@dataclass
class PretrainConfig:
    arch: str = field(default="encoder", metadata={"help": "encoder (MLM/MNTP) or decoder (CLM)"})
    size: str | None = field(default=None, metadata={"help": "17m, 32m, 68m, 150m, 400m, 1b or tiny: the shape built from scratch (default tiny), whose Ettin learning rate and weight decay apply; with --init it is --init's size (a --size that disagrees is refused)"})
    data: str | None = field(default=None, metadata={"help": "local .txt/.jsonl/.parquet file or folder, or a hub dataset (streamed)"})
    output_dir: str | None = field(default=None, metadata={"help": "run folder: final/, checkpoint-STEP/, logs"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    init: str | None = field(default=None, metadata={"help": "continue these weights: short name, hub id[@revision] or folder; converted if it is the other architecture"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder or hub id (default: --init's, else trained on the data)"})
    resume: bool = field(default=False, metadata={"help": "continue the latest complete checkpoint in output_dir"})

    objective: str = field(default="auto", metadata={"help": "auto (mlm for encoders, clm for decoders), mlm, clm or mntp"})
    mlm_probability: float | None = field(default=None, metadata={"help": "masking rate of mlm/mntp (default 0.3, Ettin's; 0.15 in the decay phase)"})
    mask_replace_prob: float | None = field(default=None, metadata={"help": "share of masked tokens replaced by [MASK] (default 0.8)"})
    random_replace_prob: float | None = field(default=None, metadata={"help": "share of masked tokens replaced by a random token (default 0.1)"})

    seq_len: int = field(default=1024, metadata={"help": "tokens per packed row"})
    context: int = field(default=1024, metadata={"help": "model context: 1024 (RoPE 10k/10k) or 8192 (RoPE 160k global)"})
    global_rope_theta: float | None = field(default=None, metadata={"help": "override the global RoPE theta"})
    local_rope_theta: float | None = field(default=None, metadata={"help": "override the local RoPE theta"})
    vocab_size: int | None = field(default=None, metadata={"help": "vocabulary of a tokenizer trained from scratch (default 50368, Ettin's)"})
    tokenizer_documents: int | None = field(default=None, metadata={"help": "documents used to train a tokenizer from scratch (default 200000)"})

    batch_size: int = field(default=8, metadata={"help": "rows per device per micro-batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate (default: the Ettin value for the size)"})
    weight_decay: float | None = field(default=None, metadata={"help": "decoupled weight decay (default: the Ettin value)"})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    max_grad_norm: float = field(default=0.0, metadata={"help": "gradient clipping norm; 0 disables"})
    warmup_steps: int = field(default=0, metadata={"help": "warmup steps (overrides warmup_ratio when > 0)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "warmup share of max_steps"})
    decay_ratio: float = field(default=0.0, metadata={"help": "share of max_steps spent decaying at the end (WSD)"})
    decay_type: str = field(default="1-sqrt", metadata={"help": "decay shape: 1-sqrt, linear or cosine"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "learning rate at the end of the decay, as a share of lr"})

    precision: str = field(default="auto", metadata={"help": "auto (bf16 on capable GPUs and bf16 CPUs), bf16, fp16 or fp32"})
    attn_implementation: str = field(default="auto", metadata={"help": "auto, flash_attention_2, sdpa or eager"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    num_workers: int = field(default=1, metadata={"help": "data loader workers packing and masking rows in the background (local data; a streamed hub dataset is read by the training process)"})
    text_column: str = "text"
    data_config: str | None = field(default=None, metadata={"help": "hub dataset configuration"})
    data_split: str = "train"
    eval_documents: int = field(default=200, metadata={"help": "documents held out for evaluation"})
    eval_rows: int = field(default=16, metadata={"help": "packed rows evaluated at most"})
    eval_every: int = field(default=100, metadata={"help": "evaluate every N steps (0: only at the end)"})
    save_every: int = field(default=500, metadata={"help": "checkpoint every N steps (0: only the final model)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "keep the last N checkpoints"})
    log_every: int = field(default=10, metadata={"help": "log every N steps"})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard, wandb, all or none"})
    peak_flops: float | None = field(default=None, metadata={"help": "peak FLOP/s per device for MFU (default: measured/known)"})
    seed: int = 42

    def __post_init__(self):
        if self.arch not in ("encoder", "decoder"):
            raise EttinError(f"--arch must be encoder or decoder, got {self.arch!r}")
        if self.objective == "auto":
            self.objective = "mlm" if self.arch == "encoder" else "clm"
        valid = {"encoder": ("mlm", "mntp"), "decoder": ("clm",)}[self.arch]
        if self.objective not in valid:
            raise EttinError(f"objective {self.objective!r} does not train {'an' if self.arch == 'encoder' else 'a'} "
                             f"{self.arch}; expected {' or '.join(valid)}")
        self._refuse_ignored_flags()
        for name, value in MASKING.items() if self.objective != "clm" else ():
            setattr(self, name, value if getattr(self, name) is None else getattr(self, name))
        if self.init is not None:
            self.size = self._size_of_init()
        else:
            self.size = self.size or "tiny"
            shape_of(self.size)  # before any data or model is read
        if self.size is None and (self.lr is None or self.weight_decay is None):
            raise EttinError(f"--init {self.init} has none of the Ettin sizes' shapes, so the Ettin learning rate and "
                             "weight decay do not apply; give --lr and --weight-decay")
        self.lr = PEAK_LR[self.size] if self.lr is None else self.lr
        self.weight_decay = WEIGHT_DECAY[self.size] if self.weight_decay is None else self.weight_decay
        if self.max_steps < 1:
            raise EttinError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.objective != "clm" and not 0 < self.mlm_probability < 1:
            raise EttinError(f"--mlm-probability must be between 0 and 1, got {self.mlm_probability}")
        warmup, decay = self.schedule_steps()
        if warmup + decay > self.max_steps:
            raise EttinError(f"warmup ({warmup}) plus decay ({decay}) steps exceed --max-steps {self.max_steps}")

    def _refuse_ignored_flags(self) -> None:
        """One line for a flag this combination would ignore."""
        if self.objective == "clm":
            given = [name for name in MASKING if getattr(self, name) is not None]
            if given:
                raise EttinError(f"--{given[0].replace('_', '-')} applies to masked objectives (mlm, mntp); a decoder "
                                 "trains with clm: drop it")
        source = "--init" if self.init is not None else "--tokenizer" if self.tokenizer is not None else None
        for name in ("vocab_size", "tokenizer_documents"):
            if source and getattr(self, name) is not None:
                raise EttinError(f"--{name.replace('_', '-')} applies to a tokenizer trained from scratch; the "
                                 f"tokenizer comes from {source}: drop it")

    def _size_of_init(self) -> str | None:
        """--init's Ettin size, by its shape; a --size that names another is refused."""
        from .models import locate_model

        located = locate_model(self.init, purpose="--init")
        if not located.ettin:
            raise EttinError(f"--init {self.init} is a {located.config.model_type} model; pretraining continues Ettin "
                             "(ModernBERT) encoders and decoders only")
        model = located.config
        size = next((name for name, shape in SHAPES.items()
                     if (shape.layers, shape.hidden, shape.intermediate)
                     == (model.num_hidden_layers, model.hidden_size, model.intermediate_size)), None)
        if self.size is not None and self.size != size:
            shape_of(self.size)
            found = f"the {size} shape" if size else (f"{model.num_hidden_layers} layers of width {model.hidden_size}, "
                                                      "no Ettin size's shape")
            raise EttinError(f"--size {self.size} disagrees with --init {self.init}, which has {found}; drop --size "
                             "(it is taken from --init)")
        return size

    def schedule_steps(self) -> tuple[int, int]:
        """(warmup, decay) steps of the warmup-stable-decay schedule."""
        warmup = self.warmup_steps or int(round(self.warmup_ratio * self.max_steps))
        return warmup, int(round(self.decay_ratio * self.max_steps))


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, dry_run = parse_config(
        PretrainConfig, argv=argv, prog="python -m ettin_ft.pretrain",
        description="Build or continue an Ettin encoder or decoder with the Ettin recipe (accelerate; "
        "run under `accelerate launch` or `torchrun` for several processes).",
    )
    if dry_run:
        print(dump_yaml(to_dict(config)), end="")
        return
    for name in ("data", "output_dir"):
        if getattr(config, name) is None:
            raise EttinError(f"--{name.replace('_', '-')} is required")
    from .training.loop import run_pretraining

    run_pretraining(config)


if __name__ == "__main__":
    main()
