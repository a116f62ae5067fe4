"""The WinoGender bias probe of the Ettin release: which pronoun a model prefers, zero-shot, for both architectures.

Each WinoGender item is one sentence in three versions that differ in the pronoun (male he/his/him, female
she/her, neutral they/their/them; a verb may agree). Encoders see the pronoun masked and compare the probability
of the three versions' pronouns; decoders score the three sentences by log-likelihood. Reported: the share of items where each
gender is preferred, the same on the "gotcha" items (where the occupation statistics point away from the female
pronoun), and across occupations the Pearson r between female-minus-male preference and the BLS share of women.

    python -m ettin_ft.bias --model encoder-150m --data ../shared/data/bias/winogender --output-dir runs/bias-enc
"""

from __future__ import annotations

import csv
import math
import os
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .config import parse_config
from .data.text import text_lines
from .errors import EttinError, cli_entry
from .models import load_model, load_tokenizer, locate_model
from .run_folder import RunFolder, write_probe_results
from .runtime import choose_runtime

GENDERS = ("male", "female", "neutral")
FILES = ("all_sentences.tsv", "occupations-stats.tsv")
SENTENCE_ID = re.compile(r"^(?P<occupation>[^.]+)\.(?P<participant>[^.]+)\.(?P<answer>[01])\.(?P<gender>male|female|neutral)\.txt$")


@dataclass
class BiasConfig:
    model: str | None = field(default=None, metadata={"help": "encoder or decoder: short name (encoder-150m), hub id[@revision] or local folder"})
    data: str | None = field(default=None, metadata={"help": "WinoGender folder with all_sentences.tsv and occupations-stats.tsv (github.com/rudinger/winogender-schemas, data/), e.g. ../shared/data/bias/winogender"})
    output_dir: str = field(default="runs/bias", metadata={"help": "folder for metrics.json and items.jsonl"})
    batch_size: int = field(default=32, metadata={"help": "sentences per forward pass"})
    device: str | None = field(default=None, metadata={"help": "cuda or cpu (default: CUDA when present)"})


@dataclass(frozen=True)
class WinoGenderItem:
    """One WinoGender sentence in its three versions; version g is ``prefix + pronouns[g] + suffixes[g]``."""

    occupation: str
    participant: str
    answer: int  # 0: the pronoun refers to the occupation, 1: to the other participant
    prefix: str
    pronouns: dict  # gender → the pronoun of that version
    suffixes: dict  # gender → the rest of that version (the verb agrees: "he was", "they were")
    sentences: dict  # gender → full sentence


def split_on_pronoun(versions: dict[str, str], where: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(text before the pronoun, the pronoun of each version, the rest of each version): the pronoun is the first
    word in which the versions differ (a verb after it may differ too)."""
    words = {gender: versions[gender].split(" ") for gender in GENDERS}
    index = next((i for i in range(min(map(len, words.values()))) if len({words[g][i] for g in GENDERS}) > 1), None)
    if index is None:
        raise EttinError(f"{where}: the male, female and neutral sentences do not differ; expected different pronouns")
    pronouns, suffixes = {}, {}
    for gender in GENDERS:
        match = re.fullmatch(r"([A-Za-z]+)(\W*)", words[gender][index])
        if match is None:
            raise EttinError(f"{where}: {words[gender][index]!r} in the {gender} sentence is not a pronoun")
        pronouns[gender] = match.group(1)
        suffixes[gender] = match.group(2) + "".join(" " + w for w in words[gender][index + 1:])
    prefix = " ".join(words["male"][:index]) + (" " if index else "")
    return prefix, pronouns, suffixes


def load_winogender(folder: str) -> tuple[list[WinoGenderItem], dict[str, float]]:
    """(items, occupation → BLS percentage of women) from WinoGender's TSV files."""
    expected = "WinoGender's data folder (github.com/rudinger/winogender-schemas, data/), e.g. ../shared/data/bias/winogender"
    if not folder:
        raise EttinError(f"--data is required: {expected}")
    missing = [name for name in FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise EttinError(f"--data {folder}: missing {', '.join(missing)}; expected {expected}")
    stats = os.path.join(folder, "occupations-stats.tsv")
    bls = {row["occupation"]: float(row["bls_pct_female"])
           for row in csv.DictReader((line for _, line in text_lines(stats)), delimiter="\t")}
    groups: dict[tuple, dict[str, str]] = defaultdict(dict)
    path = os.path.join(folder, "all_sentences.tsv")
    for line, row in enumerate(csv.DictReader((text for _, text in text_lines(path)), delimiter="\t"), start=2):
        match = SENTENCE_ID.match(row.get("sentid") or "")
        if match is None or not row.get("sentence"):
            raise EttinError(f"{path} line {line}: expected sentid 'occupation.participant.answer.gender.txt' "
                             "and a sentence")
        key = (match["occupation"], match["participant"], int(match["answer"]))
        groups[key][match["gender"]] = row["sentence"].strip()
    items = []
    for (occupation, participant, answer), versions in groups.items():
        where = f"{path}: {occupation}.{participant}.{answer}"
        if set(versions) != set(GENDERS):
            raise EttinError(f"{where}: expected a male, female and neutral sentence, found {', '.join(sorted(versions))}")
        if occupation not in bls:
            raise EttinError(f"{where}: occupation {occupation!r} is not in occupations-stats.tsv")
        items.append(WinoGenderItem(occupation, participant, answer, *split_on_pronoun(versions, where), versions))
    if not items:
        raise EttinError(f"{path} holds no sentences")
    return items, bls


def is_gotcha(item: WinoGenderItem, gender: str, bls: dict[str, float]) -> bool:
    """WinoGender's gotcha: a female pronoun for the occupation when it is under 50% female by BLS, or for the other
    participant when it is at least 50% female; the reverse for male pronouns."""
    female_majority = bls[item.occupation] >= 50
    refers_to_occupation = item.answer == 0
    female_gotcha = refers_to_occupation != female_majority
    return female_gotcha if gender == "female" else not female_gotcha if gender == "male" else False


@torch.inference_mode()
def encoder_scores(model, tokenizer, items: list[WinoGenderItem], batch_size: int) -> list[dict[str, float]]:
    """Per item, the probability of each version's pronoun at the mask in its own version's sentence.

    The slot's own forms compete (he/she/they, his/her/their, him/her/them), so no gender gains from having more
    forms. A pronoun of several tokens gets as many masks, and its probability is the product of each token's at
    its mask (the masks predicted independently).
    """
    device = next(model.parameters()).device
    queries = []  # (item index, gender, token ids of the pronoun, masked text)
    for index, item in enumerate(items):
        for gender in GENDERS:
            # Mid-sentence the pronoun's tokens carry the space before it, which [MASK] absorbs too.
            ids = tokenizer((" " if item.prefix else "") + item.pronouns[gender], add_special_tokens=False)["input_ids"]
            queries.append((index, gender, ids, item.prefix + tokenizer.mask_token * len(ids) + item.suffixes[gender]))
    mass = [dict.fromkeys(GENDERS, 0.0) for _ in items]
    unique_texts = sorted({q[3] for q in queries})
    probabilities = {}
    for start in tqdm(range(0, len(unique_texts), batch_size), desc="masked pronouns", leave=False):
        texts = unique_texts[start:start + batch_size]
        encoded = tokenizer(texts, return_tensors="pt", padding=True).to(device)
        logits = model(**encoded).logits.float().softmax(-1)
        for row, text in enumerate(texts):
            positions = (encoded["input_ids"][row] == tokenizer.mask_token_id).nonzero()[:, 0]
            probabilities[text] = logits[row, positions].cpu()
    for index, gender, ids, text in queries:
        slots = probabilities[text]
        mass[index][gender] = math.prod(float(slots[k, token]) for k, token in enumerate(ids))
    return mass


@torch.inference_mode()
def decoder_scores(model, tokenizer, items: list[WinoGenderItem], batch_size: int) -> list[dict[str, float]]:
    """Per item, each version's probability relative to the other two (softmax of the sentence log-likelihoods)."""
    device = next(model.parameters()).device
    sentences = [(index, gender, item.sentences[gender]) for index, item in enumerate(items) for gender in GENDERS]
    log_likelihood = [dict.fromkeys(GENDERS, 0.0) for _ in items]
    for start in tqdm(range(0, len(sentences), batch_size), desc="sentences", leave=False):
        batch = sentences[start:start + batch_size]
        encoded = tokenizer([s for _, _, s in batch], return_tensors="pt", padding=True).to(device)
        logits = model(**encoded).logits.float()
        targets = encoded["input_ids"][:, 1:]
        token_log_probs = logits[:, :-1].log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        token_log_probs = token_log_probs * encoded["attention_mask"][:, 1:]
        for (index, gender, _), total in zip(batch, token_log_probs.sum(-1).tolist()):
            log_likelihood[index][gender] = total
    scores = []
    for values in log_likelihood:
        top = max(values.values())
        scores.append({g: math.exp(v - top) for g, v in values.items()})
    return scores


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2 or statistics.pstdev(xs) == 0 or statistics.pstdev(ys) == 0:
        return None  # undefined when one side is constant
    return statistics.correlation(xs, ys)


def summarise(items: list[WinoGenderItem], scores: list[dict[str, float]], bls: dict[str, float]) -> dict:
    """Preference shares (all items and gotcha items), the per-occupation female-minus-male preference and its r."""
    def shares(indices: list[int]) -> dict[str, float]:
        winners = [max(GENDERS, key=scores[i].get) for i in indices]
        return {g: winners.count(g) / len(indices) if indices else 0.0 for g in GENDERS}

    normalised = [{g: s[g] / sum(s.values()) for g in GENDERS} if sum(s.values()) > 0 else dict.fromkeys(GENDERS, 1 / 3)
                  for s in scores]
    by_occupation = defaultdict(list)
    for item, share in zip(items, normalised):
        by_occupation[item.occupation].append(share["female"] - share["male"])
    occupations = sorted(by_occupation)
    female_minus_male = [statistics.mean(by_occupation[o]) for o in occupations]
    gotcha = [i for i, item in enumerate(items) if is_gotcha(item, "female", bls)]
    return {
        "preference": shares(list(range(len(items)))),
        "gotcha": shares(gotcha),
        "bls_pearson_r": pearson(female_minus_male, [bls[o] for o in occupations]),
        "sentences": 3 * len(items),
        "items": len(items),
        "gotcha_items": len(gotcha),
        "per_occupation": [{"occupation": o, "bls_pct_female": bls[o], "female_minus_male": d}
                           for o, d in zip(occupations, female_minus_male)],
    }


def probe(model, tokenizer, arch: str, items: list[WinoGenderItem], bls: dict[str, float], batch_size: int = 32) -> tuple[dict, list]:
    """(metrics, per-item scores) of a loaded model."""
    model.eval()
    if arch == "encoder":
        if tokenizer.mask_token is None:
            raise EttinError("the encoder's tokenizer has no mask token, which the probe masks the pronoun with")
        scores = encoder_scores(model, tokenizer, items, batch_size)
    else:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        scores = decoder_scores(model, tokenizer, items, batch_size)
    return summarise(items, scores, bls), scores


def run_probe(config: BiasConfig) -> dict:
    """Probe ``config.model`` and write DIR/metrics.json and DIR/items.jsonl; returns the metrics."""
    if not config.model:
        raise EttinError("--model is required: an encoder or decoder (short name, hub id or folder)")
    RunFolder(config.output_dir).refuse_finished("a finished probe")
    items, bls = load_winogender(config.data)
    located = locate_model(config.model, purpose="the bias probe")
    runtime = choose_runtime(config.device, "fp32")
    model = load_model(located).to(runtime.device)
    metrics, scores = probe(model, load_tokenizer(located), located.arch, items, bls, config.batch_size)
    metrics = {"model": config.model, "arch": located.arch, **metrics}
    write_probe_results(config.output_dir, ({"occupation": item.occupation, "participant": item.participant,
                                             "answer": item.answer, "sentence": item.sentences["neutral"],
                                             "scores": score, "preferred": max(GENDERS, key=score.get)}
                                            for item, score in zip(items, scores)), metrics)
    return metrics


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, _ = parse_config(BiasConfig, argv=argv, prog="python -m ettin_ft.bias",
                             description="WinoGender bias probe (zero-shot): pronoun preference of an encoder "
                                         "(masked pronoun) or decoder (sentence log-likelihood).")
    metrics = run_probe(config)
    share = metrics["preference"]
    r = metrics["bls_pearson_r"]
    print(f"{config.model} ({metrics['arch']}): prefers male {share['male']:.1%}, female {share['female']:.1%}, "
          f"neutral {share['neutral']:.1%} of {metrics['items']} items; gotcha female {metrics['gotcha']['female']:.1%}; "
          f"r(female − male, BLS % women) = {'n/a' if r is None else f'{r:.3f}'}; {config.output_dir}/metrics.json")


if __name__ == "__main__":
    main()
