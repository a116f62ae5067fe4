"""Device, precision and attention kernel: one choice, made in one place, overridable at every step."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from .errors import EttinError

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # compute precision (bf16 autocast or full fp32)
    attn_implementation: str

    @property
    def bf16(self) -> bool:
        return self.dtype == torch.bfloat16

    @property
    def fp16(self) -> bool:
        return self.dtype == torch.float16


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 beats fp32."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def choose_runtime(
    device: str | None = None,
    precision: str | None = None,
    attn_implementation: str | None = None,
    *,
    cpu_bf16: bool = False,
) -> Runtime:
    """Pick device, precision and attention kernel; every choice can be overridden.

    Defaults: CUDA if present, else CPU; bf16 on GPUs that support it, fp32 on CPU (bf16 there too
    when ``cpu_bf16`` and the CPU has native bf16); flash_attention_2 when installed on CUDA, else sdpa.
    """
    chosen_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen_device.type == "cuda" and chosen_device.index is None and "LOCAL_RANK" in os.environ:
        chosen_device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per process
    if precision in (None, "auto"):
        if chosen_device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        else:
            dtype = torch.bfloat16 if cpu_bf16 and cpu_has_native_bf16() else torch.float32
    elif precision in PRECISIONS:
        dtype = PRECISIONS[precision]
    else:
        raise EttinError(f"unknown precision {precision!r}; expected auto, bf16, fp16 or fp32")
    if attn_implementation in (None, "auto"):
        flash = chosen_device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None
        attn_implementation = "flash_attention_2" if flash else "sdpa"
    elif attn_implementation not in ("flash_attention_2", "sdpa", "eager"):
        raise EttinError(f"unknown attention kernel {attn_implementation!r}; expected flash_attention_2, sdpa or eager")
    return Runtime(chosen_device, dtype, attn_implementation)


def model_kwargs(runtime) -> dict[str, Any]:
    """from_pretrained's arguments for the run's attention kernel."""
    return {"attn_implementation": runtime.attn_implementation}


def transformer_kwargs(ref, runtime) -> dict[str, Any]:
    """A sentence-transformers Transformer module's arguments for ``ref``: one revision for its model, tokenizer and
    config, and the run's attention kernel."""
    revision = {"revision": ref.revision}
    return {"model_kwargs": {**model_kwargs(runtime), **revision}, "processor_kwargs": revision, "config_kwargs": revision}


def refuse_sharded_fine_tuning(args) -> None:
    """Fine-tuning runs on data parallelism (DDP) or DeepSpeed ZeRO-2 only: LoRA merging, SFT samples and retrieval
    evaluation read the whole weights on the main process, which FSDP and ZeRO-3 keep sharded, and no GPU check
    has proven those paths yet. (Pretraining has its own FSDP2 path.)"""
    environment = os.environ
    if args.fsdp or environment.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        sharding = "FSDP"
    elif _zero_stage(args.deepspeed) == 3 or (environment.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
                                              and environment.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"):
        sharding = "DeepSpeed ZeRO-3"
    else:
        return
    raise EttinError(f"fine-tuning under {sharding} is not supported: evaluation, SFT samples and LoRA merging need "
                     "the whole weights on the main process; launch with configs/accelerate/multi_gpu.yaml or "
                     "deepspeed_zero2.yaml")


def _zero_stage(deepspeed) -> int | None:
    """The ZeRO stage of a trainer's ``deepspeed`` setting (a dict or a JSON file), if it names one."""
    if isinstance(deepspeed, str) and os.path.isfile(deepspeed):
        with open(deepspeed, encoding="utf-8") as handle:
            deepspeed = json.load(handle)
    stage = deepspeed.get("zero_optimization", {}).get("stage") if isinstance(deepspeed, dict) else None
    return int(stage) if isinstance(stage, (int, str)) and str(stage).isdigit() else None
