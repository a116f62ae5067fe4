"""Build, locate and load Ettin encoders (ModernBertForMaskedLM) and decoders (ModernBertDecoderForCausalLM),
and choose the device, precision and attention kernel — all in one place."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass, replace

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    ModernBertConfig,
    ModernBertDecoderConfig,
    ModernBertDecoderForCausalLM,
    ModernBertForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
)

from .errors import EttinError
from .models import ARCHS, LOCAL_WINDOW, VOCAB_SIZE, ModelRef, layer_types, resolve, shape_of

# The Ettin special tokens (ModernBERT tokenizer): [CLS] doubles as BOS, [SEP] as EOS.
ETTIN_SPECIAL_IDS = {"cls": 50281, "sep": 50282, "pad": 50283, "mask": 50284}

# LoRA targets: the attention and MLP linear layers (the encoder fuses q/k/v into Wqkv).
LORA_TARGET_MODULES = {"encoder": "Wqkv,Wo,Wi", "decoder": "q_proj,k_proj,v_proj,Wo,Wi"}

# RoPE theta (global, local) per training context: 1024-token pretraining, then 8k context extension.
ROPE_THETA = {1024: (10_000.0, 10_000.0), 8192: (160_000.0, 10_000.0)}


def rope_parameters(context: int, global_theta: float | None = None, local_theta: float | None = None) -> dict:
    """RoPE settings per attention type for a training context (explicit thetas override the defaults)."""
    default_global, default_local = ROPE_THETA.get(context, ROPE_THETA[8192])
    return {
        "full_attention": {"rope_type": "default", "rope_theta": global_theta or default_global},
        "sliding_attention": {"rope_type": "default", "rope_theta": local_theta or default_local},
    }


def model_config(
    size: str,
    arch: str,
    *,
    vocab_size: int = VOCAB_SIZE,
    special_ids: dict[str, int] | None = None,
    context: int = 1024,
    global_rope_theta: float | None = None,
    local_rope_theta: float | None = None,
    attn_implementation: str | None = None,
) -> PretrainedConfig:
    """The official Ettin configuration of ``size`` for ``arch`` ("encoder" or "decoder")."""
    if arch not in ARCHS:
        raise EttinError(f"unknown architecture {arch!r}; expected 'encoder' or 'decoder'")
    shape = shape_of(size)
    ids = {**ETTIN_SPECIAL_IDS, **(special_ids or {})}
    rope = rope_parameters(context, global_rope_theta, local_rope_theta)
    config_class = ModernBertConfig if arch == "encoder" else ModernBertDecoderConfig
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        max_position_embeddings=context,
        layer_types=layer_types(shape.layers),
        global_attn_every_n_layers=3,
        local_attention=LOCAL_WINDOW,
        rope_parameters=rope,
        hidden_activation="gelu",  # with the doubled input projection: GeGLU
        attention_bias=False,
        mlp_bias=False,
        norm_bias=False,
        tie_word_embeddings=True,
        pad_token_id=ids["pad"],
        bos_token_id=ids["cls"],
        eos_token_id=ids["sep"],
        cls_token_id=ids["cls"],
        sep_token_id=ids["sep"],
    )
    if attn_implementation:
        config._attn_implementation = attn_implementation
    return config


def special_ids_of(tokenizer) -> dict[str, int]:
    return {
        "cls": tokenizer.cls_token_id,
        "sep": tokenizer.sep_token_id,
        "pad": tokenizer.pad_token_id,
        "mask": tokenizer.mask_token_id,
    }


def build_model(size: str, arch: str, tokenizer=None, **config_kwargs) -> PreTrainedModel:
    """A freshly initialised Ettin model; with ``tokenizer`` its vocabulary and special ids are used."""
    if tokenizer is not None:
        config_kwargs.setdefault("vocab_size", len(tokenizer))
        config_kwargs.setdefault("special_ids", special_ids_of(tokenizer))
    config = model_config(size, arch, **config_kwargs)
    model_class = ModernBertForMaskedLM if arch == "encoder" else ModernBertDecoderForCausalLM
    return model_class(config)


def arch_of(config: PretrainedConfig) -> str:
    if config.model_type == "modernbert":
        return "encoder"
    if config.model_type == "modernbert-decoder":
        return "decoder"
    raise EttinError(f"model type {config.model_type!r} is not an Ettin encoder or decoder")


# --------------------------------------------------------------------------------------------- locate


OFFLINE_HINT = (
    "pass a local folder instead (e.g. --model runs/pretrain/final), or build one offline with "
    "`python -m ettin_ft.pretrain --size tiny --data PATH --output-dir DIR`"
)


def _from_cache(ref: ModelRef) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(ref.path, revision=ref.revision, local_files_only=True)
    except Exception:  # not cached (the hub client raises several types for this)
        return None


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks the Hugging Face libraries not to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false")


def locate(name: str, arch: str | None = None) -> ModelRef:
    """Resolve ``name`` and make sure it can be loaded, failing fast with one clear line if not.

    Hub models are checked with one quick request (the libraries otherwise retry for minutes when
    offline); a model already in the local cache is used from there.
    """
    ref = resolve(name, arch)
    if ref.local:
        if not os.path.isfile(os.path.join(ref.path, "config.json")):
            raise EttinError(
                f"folder {ref.path!r} has no config.json; expected a model saved with save_pretrained "
                "(for example the final/ folder that every ettin_ft command writes)"
            )
        return ref
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if hub_offline():
        cached = _from_cache(ref)
        if cached is None:
            raise EttinError(f"HF_HUB_OFFLINE is set and {ref.describe()} is not in the local cache; {OFFLINE_HINT}")
        return replace(ref, path=cached, revision=None, local=True)
    try:
        HfApi().model_info(ref.path, revision=ref.revision, timeout=10)
    except RevisionNotFoundError:
        raise EttinError(f"revision {ref.revision!r} of {ref.path} does not exist on the Hugging Face hub") from None
    except GatedRepoError:
        raise EttinError(f"{ref.describe()} is gated: log in with `hf auth login` after accepting its terms") from None
    except RepositoryNotFoundError:
        raise EttinError(f"no model {ref.describe()} on the Hugging Face hub (or it is private); {OFFLINE_HINT}") from None
    except Exception as error:  # network failures surface as several httpx/OSError types
        cached = _from_cache(ref)
        if cached is None:
            raise EttinError(
                f"cannot reach the Hugging Face hub to load {ref.describe()} ({type(error).__name__}) and it is "
                f"not in the local cache; {OFFLINE_HINT}"
            ) from None
        return replace(ref, path=cached, revision=None, local=True)
    return ref


def load_model(name: str, arch: str | None = None, wrong_arch_hint: str = "", **kwargs) -> PreTrainedModel:
    """Load an Ettin encoder (masked LM) or decoder (causal LM) from a short name, hub id or folder.

    ``wrong_arch_hint`` ends the error raised when the model is not the expected ``arch`` (say, which
    command takes the other kind).
    """
    ref = locate(name, arch)
    config = _load_config(ref)
    model_class = AutoModelForMaskedLM if arch_of(config) == "encoder" else AutoModelForCausalLM
    if arch and arch_of(config) != arch:
        raise EttinError(f"{ref.describe()} is an Ettin {arch_of(config)}, but {'an' if arch == 'encoder' else 'a'} {arch} "
                         f"was expected{wrong_arch_hint}")
    return model_class.from_pretrained(ref.path, revision=ref.revision, **kwargs)


def load_tokenizer(name: str, arch: str | None = None):
    ref = locate(name, arch)
    return AutoTokenizer.from_pretrained(ref.path, revision=ref.revision)


def _load_config(ref: ModelRef) -> PretrainedConfig:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(ref.path, revision=ref.revision)


# ------------------------------------------------------------------------------------ load reports

# Keys transformers reports when a pretraining checkpoint becomes a task model: the pretraining heads it
# leaves out (MLM head, LM head, output bias) and the new classifier. Both are expected there.
EXPECTED_UNUSED = ("head.", "decoder.", "lm_head.")
EXPECTED_NEW = ("classifier.",)
_REPORT_ROW = re.compile(r"^(\S+)\s*\|\s*(UNEXPECTED|MISSING|MISMATCH)\b", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExpectedLoadReports(logging.Filter):
    """Drop transformers' LOAD REPORT when it lists only the expected keys; any other report still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = _ANSI.sub("", str(record.msg))
        if "LOAD REPORT" not in message:
            return True
        rows = _REPORT_ROW.findall(message)
        expected = all((status == "UNEXPECTED" and key.startswith(EXPECTED_UNUSED))
                       or (status == "MISSING" and key.startswith(EXPECTED_NEW)) for key, status in rows)
        return not (rows and expected)


def quiet_expected_load_reports() -> None:
    logger = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, ExpectedLoadReports) for f in logger.filters):
        logger.addFilter(ExpectedLoadReports())


# ------------------------------------------------------------------------------- device and precision


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


PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


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


# ------------------------------------------------------------------------------------------------ chat


def add_chat_support(model: PreTrainedModel, tokenizer) -> None:
    """Give a decoder and its tokenizer ChatML if the tokenizer has no chat template yet.

    Ettin decoders ship without one: the <|im_start|>/<|im_end|> tokens are added offline and the
    embeddings resized (new rows drawn around the mean of the old ones); generation stops at <|im_end|>.
    """
    from .tokenizer import add_chat_template

    if tokenizer.chat_template is not None:
        return
    add_chat_template(tokenizer)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
