"""The Ettin registry: sizes → official shapes, short names → hub ids, special ids and RoPE settings.

Standard library only, so anything may import it; ``python -m ettin_ft.models`` prints it as a table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import EttinError

VOCAB_SIZE = 50368
# A global-attention layer every third layer, starting at layer 0 (0, 3, 6, ...).
GLOBAL_EVERY = 3
LOCAL_WINDOW = 128


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int


SHAPES: dict[str, Shape] = {
    "17m": Shape(7, 256, 384, 4),
    "32m": Shape(10, 384, 576, 6),
    "68m": Shape(19, 512, 768, 8),
    "150m": Shape(22, 768, 1152, 12),
    "400m": Shape(28, 1024, 2624, 16),
    "1b": Shape(28, 1792, 3840, 28),
    # Not released: same layout rules, small enough for CPU tests and the quickstart.
    "tiny": Shape(4, 64, 96, 2),
}
OFFICIAL_SIZES = ("17m", "32m", "68m", "150m", "400m", "1b")
NOMINAL_PARAMETERS = {"17m": 17e6, "32m": 32e6, "68m": 68e6, "150m": 150e6, "400m": 400e6, "1b": 1e9}
ARCHS = ("encoder", "decoder")

# The Ettin special tokens (ModernBERT tokenizer): [CLS] doubles as BOS, [SEP] as EOS.
ETTIN_SPECIAL_IDS = {"cls": 50281, "sep": 50282, "pad": 50283, "mask": 50284}

# RoPE theta (global, local) per training context: 1024-token pretraining, then 8k context extension.
ROPE_THETA = {1024: (10_000.0, 10_000.0), 8192: (160_000.0, 10_000.0)}

# Released variants: name → (architecture it loads as, hub id pattern).
VARIANTS: dict[str, tuple[str, str]] = {
    "encoder": ("encoder", "jhu-clsp/ettin-encoder-{size}"),
    "decoder": ("decoder", "jhu-clsp/ettin-decoder-{size}"),
    "enc-from-dec": ("encoder", "jhu-clsp/ettin-enc-from-dec-{size}"),
    "dec-from-enc": ("decoder", "jhu-clsp/ettin-dec-from-enc-{size}"),
}


def global_layers(num_layers: int) -> list[int]:
    return [i for i in range(num_layers) if i % GLOBAL_EVERY == 0]


def layer_types(num_layers: int) -> list[str]:
    """Explicit per-layer attention types (some transformers versions default differently)."""
    return ["full_attention" if i % GLOBAL_EVERY == 0 else "sliding_attention" for i in range(num_layers)]


def shape_of(size: str) -> Shape:
    if size not in SHAPES:
        raise EttinError(f"unknown Ettin size {size!r}; expected one of {', '.join(SHAPES)}")
    return SHAPES[size]


def hub_id(size: str, variant: str = "encoder") -> str:
    if variant not in VARIANTS:
        raise EttinError(f"unknown Ettin variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if size not in OFFICIAL_SIZES:
        raise EttinError(
            f"size {size!r} has no released weights (released: {', '.join(OFFICIAL_SIZES)}); "
            "build one with `python -m ettin_ft.pretrain --size tiny ...`"
        )
    return VARIANTS[variant][1].format(size=size)


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: a local folder, or a hub repository at an optional revision."""

    name: str  # what the user typed
    path: str  # local folder or hub repo id
    revision: str | None
    arch: str | None  # "encoder"/"decoder" when the name implies it
    local: bool

    def describe(self) -> str:
        where = self.path + (f"@{self.revision}" if self.revision else "")
        return where if self.name == where else f"{self.name} ({where})"


def resolve(name: str, arch: str | None = None) -> ModelRef:
    """Resolve a short name, hub id (``org/model[@revision]``) or local path.

    Short names: ``150m`` (the ``arch`` architecture, encoder by default), ``encoder-150m``,
    ``decoder-150m``, ``enc-from-dec-150m`` and ``dec-from-enc-150m``.
    """
    if os.path.isdir(name):
        return ModelRef(name, name, None, arch, local=True)
    if name in OFFICIAL_SIZES:
        variant = arch or "encoder"
        return ModelRef(name, hub_id(name, variant), None, VARIANTS[variant][0], local=False)
    for variant, (variant_arch, _) in VARIANTS.items():
        prefix = variant + "-"
        if name.startswith(prefix) and name[len(prefix) :] in SHAPES:
            return ModelRef(name, hub_id(name[len(prefix) :], variant), None, variant_arch, local=False)
    if name == "tiny":
        hub_id("tiny")  # raises the "no released weights" error
    repo, _, revision = name.partition("@")
    if repo.count("/") == 1 and all(repo.split("/")) and not repo.startswith((".", "/")):
        return ModelRef(name, repo, revision or None, arch, local=False)
    raise EttinError(
        f"model {name!r} is neither a local folder nor a hub id (org/name[@revision]) nor a short name "
        f"({', '.join(OFFICIAL_SIZES)}, optionally prefixed by {', '.join(v + '-' for v in VARIANTS)})"
    )


def rope_parameters(context: int, global_theta: float | None = None, local_theta: float | None = None) -> dict:
    """RoPE settings per attention type for a training context (explicit thetas override the defaults)."""
    default_global, default_local = ROPE_THETA.get(context, ROPE_THETA[8192])
    return {
        "full_attention": {"rope_type": "default", "rope_theta": global_theta or default_global},
        "sliding_attention": {"rope_type": "default", "rope_theta": local_theta or default_local},
    }
