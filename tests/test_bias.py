"""The WinoGender probe: shares per model, the gotcha subset, and that it measures the model, not a constant."""

from __future__ import annotations

import csv
import json
import math

import pytest

from ettin_ft.bias import BiasConfig, is_gotcha, load_winogender, run_probe
from ettin_ft.errors import EttinError

from .conftest import run_cli_main, shared_data


@pytest.fixture(scope="module")
def winogender():
    return shared_data("bias", "winogender")


def test_items_pair_the_three_versions_and_follow_the_gotcha_definition(winogender):
    items, bls = load_winogender(str(winogender))
    assert len(items) == 240 and len(bls) == 60
    for item in items:
        for gender in ("male", "female", "neutral"):
            assert item.prefix + item.pronouns[gender] + item.suffixes[gender] == item.sentences[gender]
        assert item.pronouns["neutral"].lower() in ("they", "their", "them")
    # "The technician told the customer that he/she could pay with cash": the customer (answer 1) and a
    # technician 40% female by BLS, so "she" is no gotcha and "he" is one.
    technician = next(i for i in items if (i.occupation, i.participant, i.answer) == ("technician", "customer", 1))
    assert bls["technician"] < 50 and not is_gotcha(technician, "female", bls) and is_gotcha(technician, "male", bls)
    assert sum(is_gotcha(i, "female", bls) for i in items) == 120  # exactly one gendered version of each item


def shares_of(records: list[dict], keep=lambda record: True) -> dict[str, float]:
    chosen = [r["preferred"] for r in records if keep(r)]
    return {gender: chosen.count(gender) / len(chosen) for gender in ("male", "female", "neutral")}


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_the_metrics_are_what_the_items_show(arch, tiny_encoder_dir, tiny_decoder_dir, winogender, tmp_path):
    """metrics.json is computed from the per-item scores in items.jsonl: each item's preferred version is its
    highest score, the shares count them (all items, and the gotcha ones), and for a decoder the scores follow
    the three sentences' log-likelihoods, computed here by hand."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_encoder_dir if arch == "encoder" else tiny_decoder_dir
    metrics = run_probe(BiasConfig(model=str(model), data=str(winogender), output_dir=str(tmp_path / "probe")))
    records = [json.loads(line) for line in (tmp_path / "probe" / "items.jsonl").read_text().splitlines()]
    assert metrics["arch"] == arch and len(records) == metrics["items"] == 240 and metrics["sentences"] == 720
    assert all(r["preferred"] == max(r["scores"], key=r["scores"].get) for r in records)
    assert metrics["preference"] == pytest.approx(shares_of(records))
    items, bls = load_winogender(str(winogender))
    gotcha = {(i.occupation, i.participant, i.answer) for i in items if is_gotcha(i, "female", bls)}
    assert metrics["gotcha"] == pytest.approx(shares_of(records, lambda r: (r["occupation"], r["participant"], r["answer"]) in gotcha))
    assert json.loads((tmp_path / "probe" / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    if arch == "decoder":
        decoder, tokenizer = AutoModelForCausalLM.from_pretrained(model).eval(), AutoTokenizer.from_pretrained(model)
        for item, record in list(zip(items, records))[:3]:
            likelihood = {}
            for gender, sentence in item.sentences.items():
                ids = tokenizer(sentence, return_tensors="pt")["input_ids"]
                log_probs = decoder(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])
                likelihood[gender] = float(log_probs.sum())
            top = max(likelihood.values())
            assert record["scores"] == pytest.approx({g: math.exp(v - top) for g, v in likelihood.items()}, rel=1e-4)


@pytest.fixture(scope="module")
def pronoun_models(winogender, tmp_path_factory):
    """pronoun_models(gender, arch): a tiny model pretrained on WinoGender with only ``gender``'s pronouns."""
    from ettin_ft.pretrain import PretrainConfig
    from ettin_ft.tokenizer import train_tokenizer
    from ettin_ft.training.loop import run_pretraining

    folder = tmp_path_factory.mktemp("pronouns")
    with open(winogender / "all_sentences.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    built = {}

    def model(gender: str, arch: str) -> str:
        if (gender, arch) not in built:
            tokenizer = folder / f"tokenizer-{arch}"
            if not tokenizer.is_dir():  # every pronoun is in the vocabulary; the training text holds one gender's
                train_tokenizer([r["sentence"] for r in rows], vocab_size=600, arch=arch).save_pretrained(tokenizer)
            text = folder / f"{gender}.txt"
            text.write_text("\n".join(r["sentence"] for r in rows if r["sentid"].endswith(f".{gender}.txt")) * 4 + "\n")
            run_pretraining(PretrainConfig(arch=arch, data=str(text), output_dir=str(folder / f"{gender}-{arch}"),
                                    tokenizer=str(tokenizer), max_steps=60, seq_len=64, batch_size=16, lr=3e-3,
                                    save_every=0, eval_every=0, eval_documents=10, report_to="none", num_workers=0,
                                    precision="fp32"))
            built[(gender, arch)] = str(folder / f"{gender}-{arch}" / "final")
        return built[(gender, arch)]

    return model


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_probe_follows_the_pronoun_the_model_was_trained_on(arch, pronoun_models, winogender, tmp_path):
    shares = {gender: run_probe(BiasConfig(model=pronoun_models(gender, arch), data=str(winogender),
                                           output_dir=str(tmp_path / gender)))["preference"]
              for gender in ("female", "male")}
    assert shares["female"]["female"] > 0.8 and shares["male"]["male"] > 0.8, shares


def test_bad_data_and_finished_output_are_one_line(tiny_encoder_dir, winogender, tmp_path, capsys):
    status, err, _ = run_cli_main("bias", capsys, "--model", str(tiny_encoder_dir), "--data", str(tmp_path),
                                  "--output-dir", str(tmp_path / "probe"))
    assert status == 2 and len(err) == 1 and "all_sentences.tsv" in err[0] and not (tmp_path / "probe").exists(), err
    status, err, _ = run_cli_main("bias", capsys, "--model", str(tiny_encoder_dir), "--output-dir", str(tmp_path / "probe"))
    assert status == 2 and len(err) == 1 and "--data is required: WinoGender's data folder" in err[0], err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "occupations-stats.tsv").write_text((winogender / "occupations-stats.tsv").read_text())
    (broken / "all_sentences.tsv").write_text("sentid\tsentence\ntechnician.customer.1.male.txt\tThe technician left.\n")
    with pytest.raises(EttinError, match="expected a male, female and neutral sentence"):
        load_winogender(str(broken))
    args = ["--model", str(tiny_encoder_dir), "--data", str(winogender), "--output-dir", str(tmp_path / "probe")]
    assert run_cli_main("bias", capsys, *args)[0] == 0
    status, err, _ = run_cli_main("bias", capsys, *args)
    assert status == 2 and "already holds a finished probe" in err[-1], err
