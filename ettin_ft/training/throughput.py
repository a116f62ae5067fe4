"""Throughput: training FLOPs per token, a device's peak, and the tokens/s and MFU meter the loop logs."""

from __future__ import annotations

import time

import torch

# Known dense bf16 peaks (FLOP/s) for MFU; other devices are measured.
GPU_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "H20": 148e12, "A100": 312e12, "L40": 181e12, "A10": 125e12}


def flops_per_token(model_config, seq_len: int, predicted_share: float) -> float:
    """Training FLOPs per token: 6 × (non-embedding parameters) + attention + the vocabulary projection
    for the share of tokens that are predicted."""
    hidden, layers = model_config.hidden_size, model_config.num_hidden_layers
    per_layer = 4 * hidden * hidden + 3 * hidden * model_config.intermediate_size
    window = 2 * model_config.sliding_window
    attention = sum(12 * hidden * (seq_len if kind == "full_attention" else min(window, seq_len))
                    for kind in model_config.layer_types)
    head = 6 * (hidden * hidden + hidden * model_config.vocab_size) * predicted_share
    return 6 * layers * per_layer + attention + head


def measured_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """A device's dense matmul peak: the known figure for common GPUs, measured otherwise."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_FLOPS.items():
            if key in name:
                return value
    size = 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        torch.matmul(a, b)
        runs += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * size**3 * runs / (time.perf_counter() - start)


class ThroughputMeter:
    """Tokens per second and model FLOPs utilisation over the steps since the last reading."""

    def __init__(self, flops_per_token: float, peak_flops: float, processes: int):
        self.flops_per_token, self.peak = flops_per_token, peak_flops * processes
        self.start, self.tokens = time.perf_counter(), 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def read(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        reading = {"tokens_per_second": self.tokens / elapsed, "mfu": self.tokens * self.flops_per_token / elapsed / self.peak}
        self.start, self.tokens = time.perf_counter(), 0
        return reading
