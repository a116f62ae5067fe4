"""recipes/: the plain library scripts and the workflow scripts on the public API, run at tiny scale."""

from __future__ import annotations

import runpy
import sys

import pytest
from transformers import AutoConfig

from .conftest import REPO

RECIPES = REPO / "recipes"


def run_script(name: str, monkeypatch, *argv: str) -> None:
    monkeypatch.syspath_prepend(str(RECIPES))
    monkeypatch.setattr(sys, "argv", [str(RECIPES / name), *argv])
    runpy.run_path(str(RECIPES / name), run_name="__main__")


@pytest.mark.parametrize("script, arch, data", [
    ("dense.py", "encoder", "retrieval_train.jsonl"), ("sparse.py", "encoder", "retrieval_train.jsonl"),
    ("colbert.py", "encoder", "retrieval_train.jsonl"), ("rerank.py", "encoder", "retrieval_train.jsonl"),
    ("classify.py", "encoder", "topics_train.jsonl"), ("classify.py", "decoder", "topics_train.jsonl"),
    ("sft.py", "decoder", "sft_train.jsonl"),
])
def test_plain_scripts_train_and_save(script, arch, data, tiny_encoder_dir, tiny_decoder_dir, world100_dir, tmp_path,
                                      monkeypatch):
    model = tiny_encoder_dir if arch == "encoder" else tiny_decoder_dir
    run_script(script, monkeypatch, "--model", str(model), "--data", str(world100_dir / data), "--output-dir",
               str(tmp_path / "run"), "--max-steps", "3", "--batch-size", "8")
    final = tmp_path / "run" / "final"
    assert (final / "config.json").exists() or any(final.glob("*/config.json")), sorted(p.name for p in final.iterdir())


@pytest.mark.slow
def test_workflow_scripts_on_the_public_api(world100_dir, tmp_path, monkeypatch):
    """Each workflow end to end on the synthetic world (their defaults read ../shared/data)."""
    text = str(world100_dir / "pretrain.txt")
    run_script("build_and_embed.py", monkeypatch, "--output-dir", str(tmp_path / "embed"), "--pretrain-steps", "3",
               "--dense-steps", "2", "--pretrain-data", text, "--pairs", str(world100_dir / "retrieval_train.jsonl"),
               "--eval-beir", str(world100_dir / "retrieval_eval"))
    assert (tmp_path / "embed" / "dense" / "metrics.json").exists()
    run_script("pretraining_phases.py", monkeypatch, "--output-dir", str(tmp_path / "phases"), "--steps", "3",
               "--seq-len", "64", "--data", text)
    config = AutoConfig.from_pretrained(tmp_path / "phases" / "phase3" / "final")
    assert config.max_position_embeddings == 8192  # phase 2 extended the context and phase 3 kept it
    run_script("pretrain_and_classify.py", monkeypatch, "--output-dir", str(tmp_path / "pair"), "--pretrain-steps", "3",
               "--classify-steps", "2", "--pretrain-data", text, "--data", str(world100_dir / "topics_train.jsonl"))
    assert all((tmp_path / "pair" / f"sst2-{arch}" / "final" / "config.json").exists() for arch in ("encoder", "decoder"))
