"""Shared fixtures: a small synthetic world, a tokenizer trained on it, and tiny models saved to disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ettin_ft.runtime import cpu_has_native_bf16

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# bf16 training tests run in bf16 where the CPU has bf16 instructions (the path "auto" takes there); on CPUs
# without them bf16 matmuls are ~6x slower than fp32, which would push the suite past its time
NATIVE_BF16 = cpu_has_native_bf16()

# Tests never reach the hub: an unreachable endpoint makes any attempt fail at once.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config):
    # registered here rather than in pyproject.toml, whose hash keys .ci/run's cached environment
    config.addinivalue_line("markers", "release: proofs too long for the README's test command; only "
                                       "`python -m pytest --release-checks` runs them (.ci/run does, after it)")


def pytest_addoption(parser):
    parser.addoption("--release-checks", action="store_true",
                     help="run only the tests marked release: proofs too long for the README's test command, which "
                          ".ci/run runs after it")


def pytest_collection_modifyitems(config, items):
    wanted = config.getoption("--release-checks")
    chosen = [item for item in items if (item.get_closest_marker("release") is not None) == wanted]
    if len(chosen) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
        items[:] = chosen


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is not available")
    return path


@pytest.fixture(scope="session")
def world():
    from ettin_ft.data.synthetic import SyntheticWorld

    return SyntheticWorld(people=40, seed=0)


@pytest.fixture(scope="session")
def world_dir(world, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("world")
    world.write(str(folder))
    return folder


@pytest.fixture(scope="session")
def encoder_tokenizer(world):
    from ettin_ft.tokenizer import train_tokenizer

    return train_tokenizer(world.pretraining_texts(), vocab_size=512, arch="encoder")


@pytest.fixture(scope="session")
def decoder_tokenizer(world):
    from ettin_ft.tokenizer import train_tokenizer

    return train_tokenizer(world.pretraining_texts(), vocab_size=512, arch="decoder")


def save_untrained(build, tokenizer, folder: Path) -> Path:
    """The model ``build()`` makes from seed 0, saved with ``tokenizer`` in ``folder``."""
    torch.manual_seed(0)
    build().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder_dir(encoder_tokenizer, tmp_path_factory) -> Path:
    from ettin_ft.models import build_model

    return save_untrained(lambda: build_model("tiny", "encoder", tokenizer=encoder_tokenizer), encoder_tokenizer,
                          tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def tiny_decoder_dir(decoder_tokenizer, tmp_path_factory) -> Path:
    from ettin_ft.models import build_model

    return save_untrained(lambda: build_model("tiny", "decoder", tokenizer=decoder_tokenizer), decoder_tokenizer,
                          tmp_path_factory.mktemp("tiny-decoder"))


@pytest.fixture(scope="session")
def tiny_teacher_dir(tiny_encoder_dir, tmp_path_factory) -> Path:
    """A (random) cross-encoder on the tiny encoder: its scores are arbitrary but fixed, all a teacher's need to be
    where distillation's plumbing is tested."""
    from sentence_transformers import CrossEncoder
    from transformers import set_seed

    set_seed(7)
    folder = tmp_path_factory.mktemp("teacher") / "reranker"
    CrossEncoder(str(tiny_encoder_dir), num_labels=1, device="cpu").save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def world100_dir(tmp_path_factory) -> Path:
    """A world of 100 people: 100 held-out queries over 100 biographies, enough for stable metrics."""
    from ettin_ft.data.synthetic import SyntheticWorld

    folder = tmp_path_factory.mktemp("world100")
    SyntheticWorld(people=100, seed=0).write(str(folder))
    return folder


@pytest.fixture(scope="session")
def pretrained_tiny(world100_dir, tmp_path_factory):
    """pretrained_tiny(arch): a tiny model pretrained 200 steps on the world's biographies (built once): the run
    folder's final/, beside its checkpoint-100/."""
    built = {}

    def pretrained(arch: str) -> Path:
        if arch not in built:
            out = tmp_path_factory.mktemp(arch) / "run"
            result = subprocess.run(
                [sys.executable, "-m", "ettin_ft.pretrain", "--arch", arch, "--size", "tiny", "--data",
                 str(world100_dir / "pretrain.txt"), "--output-dir", str(out), "--max-steps", "200", "--seq-len",
                 "128", "--batch-size", "8", "--vocab-size", "1024", "--eval-documents", "10", "--report-to", "none",
                 "--num-workers", "0", "--save-every", "100", "--keep-checkpoints", "3", "--eval-every", "0",
                 "--warmup-steps", "5"],
                capture_output=True, text=True, cwd=REPO, timeout=600,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            built[arch] = out / "final"
        return built[arch]

    return pretrained


def write_nanobeir_copy(world_folder: Path, folder: Path) -> str:
    """A world's BEIR split laid out as a local copy of sentence-transformers/NanoBEIR-en ("NanoSciFact"), BM25 top
    100 included: NanoBEIR evaluation of it must give the --eval-beir metrics."""
    import datasets

    from ettin_ft.data.loading import load_beir
    from ettin_ft.evaluation import bm25_candidates

    split = load_beir(str(world_folder / "retrieval_eval"))
    subsets = {
        "corpus": [{"_id": i, "text": text} for i, text in split.documents().items()],
        "queries": [{"_id": i, "text": text} for i, text in split.queries.items()],
        "qrels": [{"query-id": q, "corpus-id": d} for q, docs in split.qrels.items() for d in docs],
        "bm25": [{"query-id": q, "corpus-ids": docs} for q, docs in bm25_candidates(split, 100).items()],
    }
    configs = ""
    for subset, rows in subsets.items():
        (folder / subset).mkdir()
        datasets.Dataset.from_list(rows).to_parquet(str(folder / subset / "NanoSciFact.parquet"))
        configs += f"- config_name: {subset}\n  data_files:\n  - split: NanoSciFact\n    path: {subset}/NanoSciFact.parquet\n"
    (folder / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    return str(folder)


@pytest.fixture(scope="session")
def nanobeir_copy(world100_dir, tmp_path_factory) -> str:
    """The 100-person world as a local NanoBEIR copy (100 queries over 100 biographies)."""
    return write_nanobeir_copy(world100_dir, tmp_path_factory.mktemp("nanobeir"))


@pytest.fixture(scope="session")
def world10_dir(tmp_path_factory) -> Path:
    """A world of 10 people: 10 held-out queries over 10 biographies, where only the reading of evaluation flags is
    tested (a reranker scores every query against every candidate)."""
    from ettin_ft.data.synthetic import SyntheticWorld

    folder = tmp_path_factory.mktemp("world10")
    SyntheticWorld(people=10, seed=0).write(str(folder))
    return folder


@pytest.fixture(scope="session")
def small_nanobeir_copy(world10_dir, tmp_path_factory) -> str:
    """The 10-person world as a local NanoBEIR copy."""
    return write_nanobeir_copy(world10_dir, tmp_path_factory.mktemp("small-nanobeir"))


def run_cli_main(module: str, capsys, *args: str):
    """Run ``python -m ettin_ft.<module>`` in-process: (exit status, stderr lines, stdout)."""
    import importlib

    try:
        importlib.import_module(f"ettin_ft.{module}").main(list(args))
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.err.strip().splitlines(), captured.out
