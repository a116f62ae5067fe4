"""Zero-shot scoring: the decoder rule against a hand-made chain rule and lm-eval's hf model, the encoder rule
against a one-row-at-a-time implementation and fill-mask, batching, the three row shapes, bad input, and a tiny
pretrained pair on the synthetic world's facts."""

import json
import math
import os
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from ettin_ft.data.zeroshot import load_tasks
from ettin_ft.scoring import Scorer, encode_request

from .conftest import run_cli_main, shared_data

REQUESTS = [("The capital of France is", " Paris"), ("Alice Lee works for", " Beacon Logistics."),
            ("Question: which is larger?\nAnswer: ", "  the elephant"), ("A", " b c d e f g")]


def write_tasks(folder, multiple_choice=None, schema=None, cloze=None):
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        "facts": multiple_choice or [{"query": "Alice Lee works for", "choices": ["Beacon Logistics", "Cobalt Mining", "Aurora"], "gold": 0},
                                     {"query": "Question: what is red?\nAnswer: ", "choices": ["a tomato", "the sky"], "gold": 0}],
        "pronouns": schema or [{"context_options": ["Sarah helped Maria so Sarah", "Sarah helped Maria so Maria"],
                                "continuation": "said thanks.", "gold": 1}],
        "lastword": cloze or [{"context": "She opened the door and saw the", "continuation": "garden"},
                              {"context": "He drank a cup of", "continuation": "tea"}],
    }
    for name, items in rows.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    return folder


def loaded(folder, arch):
    auto = AutoModelForMaskedLM if arch == "encoder" else AutoModelForCausalLM
    return auto.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_requests_follow_lm_eval(tiny_decoder_dir):
    _, tokenizer = loaded(tiny_decoder_dir, "decoder")
    for context, continuation in REQUESTS:
        request = encode_request(tokenizer, context, continuation)
        stripped = context.rstrip()
        whole = tokenizer(stripped + context[len(stripped):] + continuation, add_special_tokens=False)["input_ids"]
        assert list(request.context) == tokenizer(stripped, add_special_tokens=False)["input_ids"]
        assert list(request.context + request.continuation) == whole


def test_decoder_scores_are_the_chain_rule(tiny_decoder_dir):
    model, tokenizer = loaded(tiny_decoder_dir, "decoder")
    requests = [encode_request(tokenizer, *pair) for pair in REQUESTS]
    scored = Scorer(model, tokenizer, "decoder", batch_size=3).score(requests)
    for request, (total, greedy) in zip(requests, scored):
        ids = [tokenizer.bos_token_id, *request.context, *request.continuation]
        with torch.no_grad():
            log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        start = 1 + len(request.context)
        by_hand = [log_probs[i - 1, ids[i]].item() for i in range(start, len(ids))]
        assert total == pytest.approx(sum(by_hand), abs=1e-4)
        assert greedy == all(log_probs[i - 1].argmax().item() == ids[i] for i in range(start, len(ids)))


def test_decoder_scores_equal_lm_eval_hf_model(tiny_decoder_dir):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = loaded(tiny_decoder_dir, "decoder")
    reference = HFLM(pretrained=model, tokenizer=tokenizer, add_bos_token=True, batch_size=2, device="cpu")
    instances = [Instance("loglikelihood", {}, pair, index) for index, pair in enumerate(REQUESTS)]
    expected = reference.loglikelihood(instances, disable_tqdm=True)
    ours = Scorer(model, tokenizer, "decoder").score([encode_request(tokenizer, *pair) for pair in REQUESTS])
    for (total, greedy), (their_total, their_greedy) in zip(ours, expected):
        assert total == pytest.approx(their_total, abs=1e-4) and greedy == their_greedy


def l2r_one_row_at_a_time(model, tokenizer, context, continuation, extra_masks=2, mntp=False):
    """The release's rule written out for one continuation, one forward pass per token, from text."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    context_ids = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    continuation_ids = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"][len(context_ids):]
    total = 0.0
    for i, target in enumerate(continuation_ids):
        ids = ([tokenizer.cls_token_id] + context_ids + continuation_ids[:i] + [tokenizer.mask_token_id] * (1 + extra_masks)
               + [tokenizer.sep_token_id])
        first_mask = ids.index(tokenizer.mask_token_id)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        total += logits[first_mask - (1 if mntp else 0)].log_softmax(-1)[target].item()
    return total


@pytest.mark.parametrize("extra_masks, mntp", [(2, False), (0, False), (2, True)])
def test_encoder_l2r_equals_the_rule_one_row_at_a_time(tiny_encoder_dir, extra_masks, mntp):
    model, tokenizer = loaded(tiny_encoder_dir, "encoder")
    requests = [encode_request(tokenizer, *pair) for pair in REQUESTS]
    scored = Scorer(model, tokenizer, "encoder", batch_size=7, extra_masks=extra_masks, mntp=mntp).score(requests)
    for pair, (total, _) in zip(REQUESTS, scored):
        assert total == pytest.approx(l2r_one_row_at_a_time(model, tokenizer, *pair, extra_masks, mntp), abs=1e-3)


def test_one_token_encoder_score_is_the_fill_mask_log_probability(tiny_encoder_dir):
    model, tokenizer = loaded(tiny_encoder_dir, "encoder")
    context = "Alice Lee works"
    word = next(w for w in (" for", " at", " in", " a") if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1)
    (total, _), = Scorer(model, tokenizer, "encoder", extra_masks=0).score([encode_request(tokenizer, context, word)])
    encoded = tokenizer(context + tokenizer.mask_token, return_tensors="pt")  # [CLS] context [MASK] [SEP]
    with torch.no_grad():
        probabilities = model(**encoded).logits[0].softmax(-1)
    at = encoded["input_ids"][0].tolist().index(tokenizer.mask_token_id)
    assert total == pytest.approx(math.log(probabilities[at, tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))[0]]), abs=1e-4)


def test_pll_masks_each_token_alone(tiny_encoder_dir):
    model, tokenizer = loaded(tiny_encoder_dir, "encoder")
    request = encode_request(tokenizer, "He drank a cup of", " hot tea")
    (total, _), = Scorer(model, tokenizer, "encoder", encoder_scoring="pll").score([request])
    sentence = [tokenizer.cls_token_id, *request.context, *request.continuation, tokenizer.sep_token_id]
    expected = 0.0
    for at in range(1 + len(request.context), 1 + len(request.context) + len(request.continuation)):
        masked = sentence[:at] + [tokenizer.mask_token_id] + sentence[at + 1:]
        with torch.no_grad():
            expected += model(torch.tensor([masked])).logits[0, at].log_softmax(-1)[sentence[at]].item()
    assert total == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_scores_do_not_depend_on_batch_size_or_order(arch, tiny_encoder_dir, tiny_decoder_dir):
    model, tokenizer = loaded(tiny_encoder_dir if arch == "encoder" else tiny_decoder_dir, arch)
    tasks = load_tasks(str(shared_data("zeroshot")), "arc_easy,winogrande", limit=4)
    requests = [encode_request(tokenizer, *pair) for task in tasks for item in task.items for pair in item.requests]
    one = Scorer(model, tokenizer, arch, batch_size=1).score(requests)
    order = list(range(len(requests)))
    random.Random(0).shuffle(order)
    shuffled = Scorer(model, tokenizer, arch, batch_size=64).score([requests[i] for i in order])
    many = [None] * len(requests)
    for position, i in enumerate(order):
        many[i] = shuffled[position]
    for (a, greedy_a), (b, greedy_b) in zip(one, many):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b


def test_command_on_every_shape(tiny_decoder_dir, tmp_path, capsys):
    data = write_tasks(tmp_path / "tasks")
    out = tmp_path / "out"
    status, err, _ = run_cli_main("zeroshot", capsys, "--model", str(tiny_decoder_dir), "--data", str(data),
                                  "--output-dir", str(out), "--batch-size", "4")
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert set(metrics["tasks"]) == {"facts", "pronouns", "lastword"}
    model, tokenizer = loaded(tiny_decoder_dir, "decoder")
    for name, task in metrics["tasks"].items():
        rows = [item for item in items if item["task"] == name]
        assert task["items"] == len(rows) and task["shape"] in ("multiple_choice", "schema", "cloze")
        # acc is recomputed from the per-choice log-likelihoods that items.jsonl keeps
        if task["shape"] != "cloze":
            assert task["acc"] == sum(max(range(len(r["loglik"])), key=r["loglik"].__getitem__) == r["gold"] for r in rows) / len(rows)
    facts = [item for item in items if item["task"] == "facts"]
    assert metrics["tasks"]["facts"]["random"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    lengths = [[len("Beacon Logistics"), len("Cobalt Mining"), len("Aurora")], [len("a tomato"), len("the sky")]]
    norm = sum(max(range(len(r["loglik"])), key=lambda i: r["loglik"][i] / n[i]) == r["gold"] for r, n in zip(facts, lengths)) / 2
    assert metrics["tasks"]["facts"]["acc_norm"] == norm
    # tokens: the continuation ids, the same that a direct request gives
    assert facts[0]["tokens"][1] == list(encode_request(tokenizer, "Alice Lee works for", " Cobalt Mining").continuation)
    # PIQA-style "Answer: " keeps one space before the choice (no second delimiter)
    assert facts[1]["tokens"][0] == list(encode_request(tokenizer, "Question: what is red?\nAnswer:", " a tomato").continuation)
    schema = next(item for item in items if item["task"] == "pronouns")
    assert schema["tokens"][0] == schema["tokens"][1]  # the same continuation after each context
    cloze = metrics["tasks"]["lastword"]
    logliks = [item["loglik"][0] for item in items if item["task"] == "lastword"]
    assert cloze["random"] == 0 and cloze["perplexity"] == pytest.approx(math.exp(-sum(logliks) / len(logliks)))
    average = metrics["average"]
    assert average["acc"] == pytest.approx(sum(t["acc"] for t in metrics["tasks"].values()) / 3)


@pytest.mark.parametrize("source, to", [("encoder", "decoder"), ("decoder", "encoder")])
def test_converted_models_are_scored_as_their_new_architecture(source, to, tiny_encoder_dir, tiny_decoder_dir,
                                                               tmp_path, capsys):
    converted = tmp_path / f"{to}-from-{source}"
    source_dir = tiny_encoder_dir if source == "encoder" else tiny_decoder_dir
    assert run_cli_main("convert", capsys, "--model", str(source_dir), "--to", to, "--output-dir", str(converted))[0] == 0
    status, err, _ = run_cli_main("zeroshot", capsys, "--model", str(converted), "--data", str(write_tasks(tmp_path / "tasks")),
                                  "--output-dir", str(tmp_path / "out"))
    assert status == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["arch"] == to and set(metrics["tasks"]) == {"facts", "pronouns", "lastword"}
    model, tokenizer = loaded(converted, to)
    first = json.loads((tmp_path / "out" / "items.jsonl").read_text().splitlines()[0])
    requests = [encode_request(tokenizer, *pair) for pair in
                [("Alice Lee works for", " Beacon Logistics"), ("Alice Lee works for", " Cobalt Mining"), ("Alice Lee works for", " Aurora")]]
    assert first["loglik"] == pytest.approx([total for total, _ in Scorer(model, tokenizer, to).score(requests)], abs=1e-4)


def test_encoder_through_lm_eval_equals_the_command(tiny_encoder_dir, tmp_path, capsys):
    """EncoderLM behind lm_eval.simple_evaluate, on a local task YAML, gives the command's per-choice scores."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from ettin_ft.lm_eval_model import EncoderLM

    data = write_tasks(tmp_path / "tasks")
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "facts.yaml").write_text(
        "task: ettin_facts\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: " + str(data / "facts.jsonl")
        + "\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{query}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{gold}}'\ntarget_delimiter: ' '\nmetric_list:\n  - metric: acc\n")
    model, tokenizer = loaded(tiny_encoder_dir, "encoder")
    results = lm_eval.simple_evaluate(model=EncoderLM(model, tokenizer=tokenizer), tasks=["ettin_facts"],
                                      task_manager=TaskManager(include_path=str(tmp_path / "yaml"), include_defaults=False),
                                      log_samples=True, limit=1)
    theirs = [choice[0] for choice in results["samples"]["ettin_facts"][0]["resps"]]
    status, err, _ = run_cli_main("zeroshot", capsys, "--model", str(tiny_encoder_dir), "--data", str(data / "facts.jsonl"),
                                  "--limit", "1", "--output-dir", str(tmp_path / "out"))
    assert status == 0, err
    ours = json.loads((tmp_path / "out" / "items.jsonl").read_text().splitlines()[0])["loglik"]
    assert [float(t[0]) for t in theirs] == pytest.approx(ours, abs=1e-4)


def test_mntp_is_read_from_the_pretraining_run(tmp_path):
    from ettin_ft.scoring import trained_with_mntp

    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("objective: mntp\narch: encoder\n")
    (tmp_path / "other" / "final").mkdir(parents=True)
    (tmp_path / "other" / "config.yaml").write_text("objective: mlm\n")
    assert trained_with_mntp(str(tmp_path / "run" / "final")) and trained_with_mntp(str(tmp_path / "run"))
    assert not trained_with_mntp(str(tmp_path / "other" / "final")) and not trained_with_mntp(str(tmp_path / "none"))


BAD = {
    "missing field": ({"query": "q", "choices": ["a", "b"]}, "expected {query, choices, gold}"),
    "gold out of range": ({"query": "q", "choices": ["a", "b"], "gold": 2}, "gold must be the index"),
    "empty file": (None, "is empty"),
    "mixed shapes": ({"context": "c", "continuation": "d"}, "one shape per file"),
}


@pytest.mark.parametrize("kind", [*BAD, "unknown task", "no such data"])
def test_bad_input_one_line_exit_2_no_output(kind, tiny_encoder_dir, tmp_path, capsys):
    data = write_tasks(tmp_path / "tasks")
    args = ["--model", str(tiny_encoder_dir), "--data", str(data), "--output-dir", str(tmp_path / "out")]
    if kind in BAD:
        row, expected = BAD[kind]
        good = json.dumps({"query": "q", "choices": ["a", "b"], "gold": 0}) + "\n"
        (data / "facts.jsonl").write_text("" if row is None else good + json.dumps(row) + "\n")
    elif kind == "unknown task":
        args += ["--tasks", "fact"]
        expected = "did you mean 'facts'?"
    else:
        args[3] = str(tmp_path / "nowhere")
        expected = "does not exist"
    status, err, _ = run_cli_main("zeroshot", capsys, *args)
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    if kind in ("missing field", "gold out of range", "mixed shapes"):
        assert "facts.jsonl line 2" in err[0]
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_a_tiny_pretrained_decoder_knows_the_world_and_untrained_models_do_not(pretrained_tiny, tiny_encoder_dir,
                                                                            tiny_decoder_dir, world100_dir, tmp_path, capsys):
    """Facts seen in pretraining (which of four employers, cities, universities, majors someone has): the decoder
    picks the right one above chance after 200 steps of the tiny shape; untrained models of both kinds guess. (The
    encoder pretrained as long scored 0.27 by l2r here, at chance: the quickstart's report shows it as measured.)"""
    scores = {}
    for name, model in (("decoder", pretrained_tiny("decoder")), ("untrained decoder", tiny_decoder_dir),
                        ("untrained encoder", tiny_encoder_dir)):
        status, err, _ = run_cli_main("zeroshot", capsys, "--model", str(model), "--data", str(world100_dir / "zeroshot"),
                                      "--output-dir", str(tmp_path / name))
        assert status == 0, err
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text())["average"]["acc"]
    margin = 2 * math.sqrt(0.25 * 0.75 / (4 * 100))  # two standard errors of a guesser's accuracy on 4 × 100 items
    assert scores["decoder"] > 0.25 + margin, scores
    assert abs(scores["untrained decoder"] - 0.25) < margin and abs(scores["untrained encoder"] - 0.25) < margin, scores
