"""Decoder recipes: full SFT and LoRA on the synthetic world's chats, the generate and fill-mask helpers."""

import json
import re
from pathlib import Path

import pytest
import torch

from .conftest import run_cli_main

pytestmark = pytest.mark.slow  # end-to-end training runs

TRAINING = ["--max-steps", "100", "--learning-rate", "3e-3", "--warmup-steps", "5", "--per-device-train-batch-size", "4",
            "--gradient-accumulation-steps", "1", "--max-length", "256", "--gradient-checkpointing", "false",
            "--held-out", "40", "--eval-generations", "8", "--logging-steps", "10", "--seed", "0"]


@pytest.fixture(scope="module")
def pretrained_decoder(pretrained_tiny) -> Path:
    return pretrained_tiny("decoder")


def sft_config(model, data, output_dir, **overrides):
    from trl import SFTConfig

    from ettin_ft.sft import DEFAULTS, SftRecipeConfig

    fields = {k: v for k, v in DEFAULTS.items() if k in SFTConfig.__dataclass_fields__}
    fields.update(output_dir=str(output_dir), max_steps=100, learning_rate=3e-3, warmup_steps=5,
                  per_device_train_batch_size=4, gradient_accumulation_steps=1, max_length=256,
                  gradient_checkpointing=False, use_cpu=True, bf16=False, seed=0, **overrides)
    return SftRecipeConfig(model=str(model), data=str(data), held_out=40, eval_generations=8), SFTConfig(**fields)


@pytest.fixture(scope="module")
def full_sft(pretrained_decoder, world100_dir, tmp_path_factory):
    from ettin_ft.sft import train_sft

    out = tmp_path_factory.mktemp("sft") / "run"
    config, args = sft_config(pretrained_decoder, world100_dir / "sft_train.jsonl", out)
    return train_sft(config, args), out


def metrics_of(output_dir):
    return json.loads((Path(output_dir) / "metrics.json").read_text())


def test_full_sft_lowers_held_out_loss_and_learns_the_answer_format(full_sft):
    model, out = full_sft
    metrics = metrics_of(out)
    assert metrics["after"]["held_out_loss"] < metrics["before"]["held_out_loss"] - 1.0, metrics
    assert metrics["after"]["held_out_perplexity"] < metrics["before"]["held_out_perplexity"]
    losses = [json.loads(line)["loss"] for line in (out / "log_history.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses[-1] < losses[0]
    # Before: the pretrained decoder rambles on in biography style. After: a short answer, then <|im_end|>.
    samples = metrics["samples"]
    assert len(samples) == 5
    assert all(len(s["answer_before"].split()) > 10 for s in samples), samples
    assert all(1 <= len(s["answer_after"].split()) <= 6 for s in samples), samples


def test_saved_chat_model_reloads_with_the_same_outputs(full_sft):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, out = full_sft
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    reloaded = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Where was Ada born?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.startswith(tokenizer.bos_token) and "<|im_end|>" in text
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
    assert reloaded.generation_config.eos_token_id in (tokenizer.convert_tokens_to_ids("<|im_end|>"),
                                                       [tokenizer.convert_tokens_to_ids("<|im_end|>")])


def test_labels_cover_only_assistant_turns_and_the_loss_is_the_models_own(pretrained_decoder, tmp_path):
    from ettin_ft.runtime import choose_runtime
    from ettin_ft.sft import build_chat_model, build_trainer, load_sft_data

    chats = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Question {i}?"},
                           {"role": "assistant", "content": f"Answer {i}."}, {"role": "user", "content": "And then?"},
                           {"role": "assistant", "content": f"Done {i}."}]} for i in range(20)]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in chats))
    config, args = sft_config(pretrained_decoder, data, tmp_path / "out", packing=False)
    config.held_out = 0
    train, held_out, fmt = load_sft_data(config)
    model, tokenizer = build_chat_model(config, choose_runtime())
    trainer = build_trainer(config, args, model, tokenizer, train, held_out, fmt)
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        assert ids[0] == tokenizer.bos_token_id
        trained = tokenizer.decode(ids[labels != -100])
        number = re.match(r"Answer (\d+)", trained).group(1)
        assert trained == f"Answer {number}.<|im_end|>Done {number}.<|im_end|>"
    # trl's fused loss must see ModernBertDecoder's prediction head: it equals the model's own loss.
    model.eval()
    with torch.no_grad():
        fused = trainer.compute_loss(model, dict(batch))
        own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(fused, own, rtol=1e-4, atol=1e-4)


def test_lora_from_the_command_line_with_merge(pretrained_decoder, world100_dir, tmp_path, capsys):
    from ettin_ft.generate import load_generator

    out = tmp_path / "lora"
    status, err, _ = run_cli_main("sft", capsys, "--model", str(pretrained_decoder), "--data",
                                  str(world100_dir / "sft_train.jsonl"), "--output-dir", str(out), "--lora",
                                  "--merge", *TRAINING)
    assert status == 0, err[-5:]
    metrics = metrics_of(out)
    assert metrics["after"]["held_out_loss"] < metrics["before"]["held_out_loss"], metrics
    assert (out / "final" / "adapter_config.json").exists() and (out / "merged" / "config.json").exists()
    adapted, tokenizer = load_generator(str(out / "final"))
    merged, _ = load_generator(str(out / "merged"))
    ids = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": "Who is Ada?"}], tokenize=False,
                                                  add_generation_prompt=True), add_special_tokens=False,
                    return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, rtol=1e-4, atol=1e-4)


def test_lora_defaults_follow_the_ettin_release(pretrained_decoder, world100_dir, tmp_path, capsys):
    args = ["--model", str(pretrained_decoder), "--data", str(world100_dir / "sft_train.jsonl"), "--dry-run",
            "--output-dir", str(tmp_path / "dry")]
    status, _, full = run_cli_main("sft", capsys, *args)
    assert status == 0 and "learning_rate: 2.0e-05" in full
    status, _, lora = run_cli_main("sft", capsys, *args, "--lora")
    assert status == 0 and "learning_rate: 0.0002" in lora and "lora_r: 32" in lora and "lora_alpha: 16" in lora
    status, _, explicit = run_cli_main("sft", capsys, *args, "--lora", "--learning-rate", "1e-4")
    assert status == 0 and "learning_rate: 0.0001" in explicit
    assert not (tmp_path / "dry").exists()


@pytest.mark.parametrize("rows, expected", [
    ([{"question": "q", "answer": "a"}], "no messages column"),
    ([{"messages": [{"role": "assistant", "content": "hi"}]}], "row 1, message 1: role 'assistant' out of order"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}], "message 2: role 'user' out of order"),
    ([], "no rows"),
])
def test_bad_data_gives_one_line(rows, expected, pretrained_decoder, tmp_path, capsys):
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    status, err, _ = run_cli_main("sft", capsys, "--model", str(pretrained_decoder), "--data", str(data),
                                  "--output-dir", str(tmp_path / "out"), *TRAINING)
    assert status == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_an_encoder_is_refused(pretrained_tiny, world100_dir, tmp_path, capsys):
    status, err, _ = run_cli_main("sft", capsys, "--model", str(pretrained_tiny("encoder")), "--data",
                                  str(world100_dir / "sft_train.jsonl"), "--output-dir", str(tmp_path / "out"))
    assert status == 2 and len(err) == 1 and "is an Ettin encoder; the sft recipe needs a decoder" in err[0], err
    assert not (tmp_path / "out").exists()


def test_generate_command_line(full_sft, capsys):
    _, out = full_sft
    status, err, printed = run_cli_main("generate", capsys, "--model", str(out / "final"), "--prompt",
                                        "Where does Bruno Mae Yamamoto work?", "--max-new-tokens", "20")
    assert status == 0, err
    assert 1 <= len(printed.split()) <= 6, printed
    status, err, sampled = run_cli_main("generate", capsys, "--model", str(out / "final"), "--prompt", "She was born",
                                        "--chat", "no", "--do-sample", "--max-new-tokens", "8")
    assert status == 0 and sampled.strip(), err


def test_generate_refuses_an_encoder(pretrained_tiny, capsys):
    status, err, _ = run_cli_main("generate", capsys, "--model", str(pretrained_tiny("encoder")), "--prompt", "Hi")
    assert status == 2 and len(err) == 1 and "is an Ettin encoder" in err[0] and "ettin_ft.fill_mask" in err[0], err


def test_fill_mask(pretrained_tiny, capsys):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from ettin_ft.fill_mask import fill_mask

    encoder = str(pretrained_tiny("encoder"))
    top = fill_mask(encoder, "She was born in [MASK].", top_k=3)
    # The same answer as the masked LM read directly through transformers' own classes.
    tokenizer, model = AutoTokenizer.from_pretrained(encoder), AutoModelForMaskedLM.from_pretrained(encoder).eval()
    inputs = tokenizer("She was born in [MASK].", return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**inputs).logits[0, inputs["input_ids"][0].tolist().index(tokenizer.mask_token_id)].softmax(-1)
    best = int(probabilities.argmax())
    assert len(top) == 3 and top[0] == (tokenizer.decode([best]).strip(), pytest.approx(float(probabilities[best]), abs=1e-5))
    status, err, printed = run_cli_main("fill_mask", capsys, "--model", encoder, "--top-k", "4", "She majored in [MASK].")
    assert status == 0 and len(printed.strip().splitlines()) == 4, err
    status, err, _ = run_cli_main("fill_mask", capsys, "--model", encoder, "No mask here.")
    assert status == 2 and "exactly once" in err[0]
    status, err, _ = run_cli_main("fill_mask", capsys, "--model", str(pretrained_tiny("decoder")), "A [MASK].")
    assert status == 2 and len(err) == 1 and "is an Ettin decoder" in err[0] and "ettin_ft.generate" in err[0], err
