import json
import math
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from ettin_ft.config import parse_config
from ettin_ft.convert import convert_model
from ettin_ft.registry import SHAPES
from ettin_ft.pretrain import PretrainConfig
from ettin_ft.training.loop import make_scheduler

from .conftest import NATIVE_BF16, run_cli_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "pretrain").glob("*.yaml"))


def small_run(data, output_dir, *extra):
    """A short run of the tiny size; one that continues (--init) or reuses a tokenizer takes both from there."""
    from_scratch = "--init" not in extra and "--tokenizer" not in extra
    return [*(["--size", "tiny", "--vocab-size", "1024"] if from_scratch else []), "--data", str(data),
            "--output-dir", str(output_dir), "--seq-len", "96", "--batch-size", "8", "--eval-documents", "30",
            "--eval-rows", "16", "--log-every", "5", "--report-to", "none", "--num-workers", "0", "--warmup-steps",
            "3", *extra]


def run_cli(*args, timeout=600, **kwargs):
    return subprocess.run([sys.executable, "-m", "ettin_ft.pretrain", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kwargs)


def losses(folder):
    return [json.loads(line) for line in (Path(folder) / "log_history.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("arch,objective", [("encoder", "mlm"), ("decoder", "clm"), ("encoder", "mntp")])
def test_held_out_loss_falls(arch, objective, world_dir, tmp_path, capsys):
    status, err, _ = run_main(capsys, *small_run(world_dir / "pretrain.txt", tmp_path / "run", "--arch", arch,
                                                 "--objective", objective, "--max-steps", "40", "--eval-every", "0"))
    assert status == 0, err[-5:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["after"]["eval_loss"] < metrics["before"]["eval_loss"] - 1.0
    history = losses(tmp_path / "run")
    assert sum(r["loss"] for r in history[-5:]) < sum(r["loss"] for r in history[:5]) - 5.0
    auto_class = AutoModelForMaskedLM if arch == "encoder" else AutoModelForCausalLM
    model = auto_class.from_pretrained(tmp_path / "run" / "final")
    assert model.config.vocab_size == 1024
    assert (tmp_path / "run" / "final" / "tokenizer.json").exists()
    assert metrics["train"]["padding_share"] < 0.02


def _lr_curve(config_path, steps=100):
    (config, _) = parse_config(PretrainConfig, argv=["--config", str(config_path), "--max-steps", str(steps)])
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=config.lr)
    scheduler = make_scheduler(optimizer, config)
    curve = []
    for _ in range(steps):
        curve.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return config, curve


def test_phase_schedules():
    peak = 3e-3
    config, lr = _lr_curve(REPO / "configs/pretrain/17m-encoder-phase1.yaml")
    assert (config.context, config.mlm_probability) == (1024, 0.3)
    assert lr[0] == 0 and lr[1] == pytest.approx(peak) and lr[99] == pytest.approx(peak)
    config, lr = _lr_curve(REPO / "configs/pretrain/17m-encoder-phase2.yaml")
    assert config.context == 8192 and config.global_rope_theta == 160_000
    assert lr[0] == pytest.approx(peak)
    assert lr[25] == pytest.approx(peak * (0.5 + 0.5 * (1 - math.sqrt(0.25))))  # 1-sqrt decay
    assert lr[99] == pytest.approx(peak * (0.5 + 0.5 * (1 - math.sqrt(0.99))))
    config, lr = _lr_curve(REPO / "configs/pretrain/17m-encoder-phase3.yaml")
    assert config.mlm_probability == 0.15
    assert lr[0] == pytest.approx(0.5 * peak)
    assert lr[99] == pytest.approx(0.5 * peak * (0.04 + 0.96 * (1 - math.sqrt(0.99))))
    config, lr = _lr_curve(REPO / "configs/pretrain/17m-dec-from-enc.yaml")
    assert (config.arch, config.objective) == ("decoder", "clm")
    assert lr[5] == pytest.approx(peak) and lr[79] == pytest.approx(peak)
    assert lr[90] == pytest.approx(peak * (0.02 + 0.98 * (1 - 10 / 20)))  # linear decay to 0.02


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_parses_and_builds_its_shape(path):
    from ettin_ft.models import build_model

    (config, _) = parse_config(PretrainConfig, argv=["--config", str(path)])
    with torch.device("meta"):
        model = build_model(config.size, config.arch, context=config.context,
                            global_rope_theta=config.global_rope_theta)
    assert model.config.num_hidden_layers == SHAPES[config.size].layers
    assert model.config.hidden_size == SHAPES[config.size].hidden
    assert model.config.rope_parameters["full_attention"]["rope_theta"] == (160_000 if config.context == 8192 else 10_000)


def test_the_shipped_configs_follow_the_per_size_table():
    """Each size × architecture has its three phases and cross-objective runs, with the size's peak learning rate
    (half of it in the decay phase, as the Ettin recipe) and weight decay from pretrain.py's table."""
    from ettin_ft.pretrain import PEAK_LR, WEIGHT_DECAY
    from ettin_ft.registry import OFFICIAL_SIZES

    runs = {"encoder-phase1": "encoder", "encoder-phase2": "encoder", "encoder-phase3": "encoder",
            "decoder-phase1": "decoder", "decoder-phase2": "decoder", "decoder-phase3": "decoder",
            "enc-from-dec": "encoder", "enc-from-dec-mntp": "encoder", "dec-from-enc": "decoder"}
    assert sorted(p.stem for p in CONFIGS) == sorted(f"{size}-{run}" for size in OFFICIAL_SIZES for run in runs)
    for path in CONFIGS:
        size, run = path.stem.split("-", 1)
        (config, _) = parse_config(PretrainConfig, argv=["--config", str(path)])
        assert (config.size, config.arch) == (size, runs[run]), path.name
        assert config.lr == pytest.approx(PEAK_LR[size] * (0.5 if run.endswith("phase3") else 1.0)), path.name
        assert config.weight_decay == pytest.approx(WEIGHT_DECAY[size]), path.name


def start_run(*args):
    return subprocess.Popen([sys.executable, "-m", "ettin_ft.pretrain", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(process, ready, extra_delay: float = 0.0) -> None:
    """SIGKILL ``process`` once ``ready()`` holds (polled every millisecond), after ``extra_delay`` seconds."""
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, "the run ended before the moment it was to be killed at"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    time.sleep(extra_delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


def writing_or_written(folder: Path, step: int):
    """Checkpoint ``step`` is being written (the kill lands mid-write) or, if the poll missed that moment on a
    busy machine, has just been written (the kill lands in the next steps)."""
    return lambda: (folder / f".staging-checkpoint-{step}").exists() or (folder / f"checkpoint-{step}").exists()


@pytest.mark.release  # eight pretraining processes, three of them killed
@pytest.mark.parametrize("arch, precision", [("encoder", "bf16" if NATIVE_BF16 else "fp32"), ("decoder", "fp32")])
def test_a_run_killed_again_and_again_resumes_to_the_uninterrupted_losses(arch, precision, world_dir, tmp_path):
    """Three SIGKILLs (two while a checkpoint is written, or just after it where a busy machine misses that
    moment; one at a random moment), each followed by --resume: the per-step losses equal those of the
    uninterrupted run. The encoder runs in bf16 on CPUs with native bf16: the path they take by default must
    resume exactly too."""
    args = ["--arch", arch, "--max-steps", "30", "--save-every", "5", "--eval-every", "0", "--precision", precision]
    assert run_cli(*small_run(world_dir / "pretrain.txt", tmp_path / "full", *args)).returncode == 0
    cut = tmp_path / "cut"
    run = small_run(world_dir / "pretrain.txt", cut, *args)
    random_delay = random.Random(0).uniform(0.0, 0.5)
    kill_when(start_run(*run), writing_or_written(cut, 10))
    kill_when(start_run(*run, "--resume"), lambda: (cut / "checkpoint-15" / "trainer_state.json").exists(), random_delay)
    kill_when(start_run(*run, "--resume"), writing_or_written(cut, 25))
    resumed = run_cli(*run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    full, interrupted = losses(tmp_path / "full"), losses(cut)
    assert [r["step"] for r in interrupted] == list(range(1, 31))
    assert [r["loss"] for r in interrupted] == [r["loss"] for r in full]
    assert len([p for p in cut.iterdir() if p.name.startswith("checkpoint-")]) <= 2
    assert not [p for p in cut.iterdir() if p.name.startswith(".staging")]


COUNT_TOKENIZED = """
import os
from transformers import PreTrainedTokenizerFast

call = PreTrainedTokenizerFast.__call__


def counted(self, text, *args, **kwargs):
    with open(os.environ["TOKENIZED_LOG"], "a", encoding="utf-8") as log:
        log.writelines(t.replace("\\n", " ") + "\\n" for t in ([text] if isinstance(text, str) else text))
    return call(self, text, *args, **kwargs)


PreTrainedTokenizerFast.__call__ = counted
"""


def kill_processes_naming(text: str) -> None:
    """SIGKILL every process whose command line holds ``text``: torchrun's workers run in sessions of their own,
    so killing torchrun alone would leave them training."""
    import os

    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass


def start_torchrun(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "ettin_ft.pretrain", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_match_one_and_resume_without_tokenizing_again(world_dir, tmp_path, capsys):
    """Two processes with two loader workers each train on the rows of one process (the same losses), tokenise
    every training document exactly once between them (counted in the tokenizer itself), and after a kill resume
    to the same losses without tokenising anything again."""
    import os
    from collections import Counter

    # fp32: under bf16 autocast (the default on CPUs with native bf16) sums split over processes differ at 1e-5.
    args = ["--arch", "encoder", "--max-steps", "8", "--save-every", "4", "--eval-every", "0", "--precision", "fp32"]
    status, err, _ = run_main(capsys, *small_run(world_dir / "pretrain.txt", tmp_path / "one", *args))
    assert status == 0, err[-5:]
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(COUNT_TOKENIZED)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hook"), "TOKENIZED_LOG": str(tmp_path / "tokenized.log")}
    two = tmp_path / "two"
    command = small_run(world_dir / "pretrain.txt", two, *args, "--batch-size", "4", "--num-workers", "2",
                        "--tokenizer", str(tmp_path / "one" / "final"))
    run = start_torchrun(*command, env=env)
    deadline = time.monotonic() + 300
    while not (two / "checkpoint-4" / "trainer_state.json").exists():
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()[-3000:]
        time.sleep(0.01)
    kill_processes_naming(str(two))
    run.wait()
    assert not (two / "final").exists()
    resumed = start_torchrun(*command, "--resume", env=env)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    for a, b in zip(losses(tmp_path / "one"), losses(two), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert sorted(p.name for p in two.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-4"]
    documents = [line for line in (world_dir / "pretrain.txt").read_text().splitlines() if line.strip()]
    tokenized = Counter((tmp_path / "tokenized.log").read_text().splitlines())
    training = Counter(documents[30:])  # the first 30 are held out (--eval-documents 30), read by every process
    assert {text: tokenized[text] for text in training} == training


@pytest.mark.slow
def test_continue_with_context_extension_and_cross_objective(world_dir, tmp_path, capsys):
    status, err, _ = run_main(capsys, *small_run(world_dir / "pretrain.txt", tmp_path / "dec", "--arch", "decoder",
                                                 "--max-steps", "5"))
    assert status == 0, err[-5:]
    status, err, _ = run_main(capsys, *small_run(world_dir / "pretrain.txt", tmp_path / "enc", "--arch", "encoder",
                                                 "--objective", "mntp", "--init", str(tmp_path / "dec" / "final"),
                                                 "--max-steps", "5", "--context", "8192", "--mlm-probability", "0.15"))
    assert status == 0, err[-5:]
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "enc" / "final")
    assert model.config.rope_parameters["full_attention"]["rope_theta"] == 160_000
    assert model.config.max_position_embeddings == 8192
    metrics = json.loads((tmp_path / "enc" / "metrics.json").read_text())
    assert metrics["after"]["eval_loss"] < metrics["before"]["eval_loss"]


def test_conversion_round_trip_preserves_every_weight(tiny_encoder_dir, tmp_path):
    encoder = AutoModelForMaskedLM.from_pretrained(tiny_encoder_dir)
    decoder = convert_model(encoder, "decoder")
    assert type(decoder).__name__ == "ModernBertDecoderForCausalLM"
    assert decoder.config.layer_types == encoder.config.layer_types
    assert decoder.config.sliding_window == encoder.config.sliding_window
    back = convert_model(decoder, "encoder")
    original, restored = encoder.state_dict(), back.state_dict()
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, restored[name]), name
    decoder_state = decoder.state_dict()
    q, k, v = original["model.layers.1.attn.Wqkv.weight"].chunk(3)
    assert torch.equal(decoder_state["model.layers.1.attn.k_proj.weight"], k)
    assert torch.equal(decoder_state["lm_head.dense.weight"], original["head.dense.weight"])


@pytest.mark.slow  # fresh interpreters
def test_convert_cli(tiny_encoder_dir, tmp_path):
    out = tmp_path / "decoder"
    result = subprocess.run([sys.executable, "-m", "ettin_ft.convert", "--model", str(tiny_encoder_dir), "--to",
                             "decoder", "--output-dir", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    decoder = AutoModelForCausalLM.from_pretrained(out)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("Alice")["input_ids"][-1] != tokenizer.sep_token_id  # decoder post-processing
    assert decoder(**tokenizer("Alice was", return_tensors="pt")).logits.shape[-1] == decoder.config.vocab_size
    again = subprocess.run([sys.executable, "-m", "ettin_ft.convert", "--model", str(tiny_encoder_dir), "--to",
                            "decoder", "--output-dir", str(out)], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: output folder {out} already exists; choose a new --output-dir"]


def run_main(capsys, *args):
    return run_cli_main("pretrain", capsys, *args)


def test_bad_inputs_give_one_line_and_no_output(world_dir, tmp_path, capsys):
    status, err, _ = run_main(capsys, *small_run(tmp_path / "nope.txt", tmp_path / "out", "--max-steps", "4"))
    assert status == 2 and err[-1] == f"error: data file {tmp_path / 'nope.txt'} does not exist"
    assert not (tmp_path / "out").exists()
    status, err, _ = run_main(capsys, *small_run(world_dir / "sft_train.jsonl", tmp_path / "out", "--max-steps", "4"))
    assert status == 2 and "missing column(s) text" in err[-1] and not (tmp_path / "out").exists()
    status, err, _ = run_main(capsys, "--arch", "decoder", "--objective", "mlm", "--data", "x", "--output-dir", str(tmp_path / "o"))
    assert status == 2 and "does not train a decoder" in err[-1] and not (tmp_path / "o").exists()
    status, err, _ = run_main(capsys, *small_run(world_dir / "pretrain.txt", tmp_path / "out", "--max-steps", "2"))
    assert status == 2 and err[-1] == "error: warmup (3) plus decay (0) steps exceed --max-steps 2"
    # The real command line: one line, exit status 2, no traceback, nothing written.
    offline = run_cli(*small_run(world_dir / "pretrain.txt", tmp_path / "out", "--init", "150m", "--max-steps", "4"))
    assert offline.returncode == 2 and "jhu-clsp/ettin-encoder-150m" in offline.stderr
    assert "Traceback" not in offline.stderr and not (tmp_path / "out").exists()


def test_the_size_comes_from_init_and_ignored_flags_are_refused(tiny_encoder_dir, tmp_path, capsys):
    """--init's shape sets the size, so its Ettin learning rate and weight decay apply; flags this combination would
    ignore are refused in one line."""
    import shutil

    import yaml

    continued = ["--init", str(tiny_encoder_dir), "--data", "x", "--output-dir", str(tmp_path / "o"), "--dry-run"]
    status, _, dry = run_main(capsys, *continued)
    settings = yaml.safe_load(dry)
    assert status == 0 and (settings["size"], settings["lr"], settings["weight_decay"]) == ("tiny", 3e-3, 3e-4)
    # a 150m-shaped model (its configuration is all the dry run reads)
    from ettin_ft.models import model_config

    shutil.copytree(tiny_encoder_dir, tmp_path / "150m")
    model_config("150m", "encoder").save_pretrained(tmp_path / "150m")
    status, _, dry = run_main(capsys, "--init", str(tmp_path / "150m"), "--data", "x", "--output-dir",
                              str(tmp_path / "o"), "--dry-run")
    assert status == 0 and (yaml.safe_load(dry)["lr"], yaml.safe_load(dry)["weight_decay"]) == (8e-4, 1e-5)
    for extra, message in [
        (["--size", "150m"], "error: --size 150m disagrees with --init"),
        (["--vocab-size", "600"], "error: --vocab-size applies to a tokenizer trained from scratch; the tokenizer comes "
                                  "from --init: drop it"),
        (["--arch", "decoder", "--mlm-probability", "0.2"], "error: --mlm-probability applies to masked objectives"),
    ]:
        status, err, _ = run_main(capsys, *continued, *extra)
        assert status == 2 and len(err) == 1 and err[0].startswith(message), err
    status, err, _ = run_main(capsys, "--tokenizer", str(tiny_encoder_dir), "--tokenizer-documents", "9", "--data", "x",
                              "--output-dir", str(tmp_path / "o"))
    assert status == 2 and err == ["error: --tokenizer-documents applies to a tokenizer trained from scratch; the "
                                   "tokenizer comes from --tokenizer: drop it"]
    assert not (tmp_path / "o").exists()


def test_existing_run_needs_resume_and_dry_run_prints_config(world_dir, tmp_path, capsys):
    run = small_run(world_dir / "pretrain.txt", tmp_path / "run", "--max-steps", "4", "--save-every", "2")
    assert run_main(capsys, *run)[0] == 0
    status, err, _ = run_main(capsys, *run)
    assert status == 2 and err[-1] == (f"error: output folder {tmp_path / 'run'} already holds a finished run; pass "
                                       "--resume (with a larger --max-steps) to go on from its last checkpoint, or "
                                       "choose another --output-dir")
    (tmp_path / "run" / "metrics.json").unlink()  # as if killed after its last checkpoint: unfinished
    status, err, _ = run_main(capsys, *run)
    assert status == 2 and "holds an unfinished run (checkpoint-2); pass --resume to continue it" in err[-1], err
    status, _, dry = run_main(capsys, "--config", "configs/pretrain/150m-encoder-phase1.yaml", "--dry-run")
    assert status == 0 and "lr: 0.0008" in dry and "size: 150m" in dry


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(world_dir, tmp_path, capsys, monkeypatch):
    """Disk full while writing checkpoint-4: one line, checkpoint-2 intact, and --resume then finishes the run
    with the losses of an uninterrupted one."""
    import errno

    from accelerate import Accelerator

    args = small_run(world_dir / "pretrain.txt", tmp_path / "run", "--max-steps", "6", "--save-every", "2",
                     "--eval-every", "0", "--warmup-steps", "1", "--precision", "fp32")
    save_state, calls = Accelerator.save_state, []

    def disk_full_on_second_save(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_state(self, *a, **k)

    monkeypatch.setattr(Accelerator, "save_state", disk_full_on_second_save)
    status, err, _ = run_main(capsys, *args)
    errors = [line for line in err if line.startswith("error: ")]  # beside the progress bar
    assert status == 2 and len(errors) == 1 and errors[0].startswith("error: cannot write checkpoint-4"), err
    assert "No space left" in errors[0] and "checkpoint-2 is intact" in errors[0] and "--resume" in errors[0]
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if "checkpoint" in p.name) == ["checkpoint-2"]
    monkeypatch.setattr(Accelerator, "save_state", save_state)
    assert run_main(capsys, *args, "--resume")[0] == 0
    assert run_main(capsys, *small_run(world_dir / "pretrain.txt", tmp_path / "whole", *args[args.index("--max-steps"):]))[0] == 0
    assert [r["loss"] for r in losses(tmp_path / "run")] == [r["loss"] for r in losses(tmp_path / "whole")]
