import filecmp
import json

import pytest

from ettin_ft.data.loading import load_beir, load_data
from ettin_ft.data.synthetic import ATTRIBUTES, SyntheticWorld
from ettin_ft.errors import EttinError


def test_same_seed_gives_byte_identical_files(tmp_path):
    SyntheticWorld(30, seed=3).write(str(tmp_path / "a"))
    SyntheticWorld(30, seed=3).write(str(tmp_path / "b"))
    SyntheticWorld(30, seed=4).write(str(tmp_path / "c"))
    files = [p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert len(files) >= 12
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    assert not filecmp.cmp(tmp_path / "a" / "pretrain.txt", tmp_path / "c" / "pretrain.txt", shallow=False)


def test_people_are_unique_and_split(world):
    names = [p.name for p in world.people]
    assert len(set(names)) == len(names) == 40
    assert len(world.test_people) == 8 and not set(world.train_people) & set(world.test_people)


def test_every_question_is_answered_by_its_passage(world):
    by_name = {p.name: p for p in world.people}
    for split in ("train", "test"):
        for row in world.retrieval_pairs(split):
            person = next(p for n, p in by_name.items() if n in row["query"])
            assert person.name in row["positive"]
            assert all(person.value(a) in row["positive"] for a in ATTRIBUTES)
            assert person.name not in row["negative"]


def test_sft_answers_are_the_world_facts(world):
    test_names = {p.name for p in world.test_people}
    for split in ("train", "test"):
        for chat in world.sft_chats(split):
            question, answer = (m["content"] for m in chat["messages"])
            person = next(p for p in world.people if p.name in question)
            assert answer in [person.value(a) for a in ATTRIBUTES]
            assert (person.name in test_names) == (split == "test")


def test_beir_split_judges_the_right_biography(world_dir, world):
    split = load_beir(str(world_dir / "retrieval_eval"))
    assert len(split.corpus) == 40 and len(split.queries) == 8 * len(ATTRIBUTES)
    for query_id, query in split.queries.items():
        (doc_id,) = split.qrels[query_id]
        assert split.corpus[doc_id]["title"] in query


def test_rerank_and_claim_labels(world):
    for row in world.rerank_examples("train"):
        name = next(p.name for p in world.people if p.name in row["query"])
        assert (name in row["passage"]) == (row["label"] == 1)
    facts = {(p.name, p.value(a)) for p in world.people for a in ATTRIBUTES}
    for row in world.claims("test"):
        true = any(n in row["text"] and v in row["text"] for n, v in facts)
        assert true == (row["label"] == 1) and row["label_text"] == ("true" if true else "false")
        person = next(p for p in world.people if p.name in row["text"])
        assert row["evidence"] == world.biography(person, 0)


def test_question_topics_name_the_attribute_asked_for(world):
    from ettin_ft.data.synthetic import QUESTIONS

    rows = world.question_topics("test")
    assert len(rows) == len(world.test_people) * len(ATTRIBUTES) * 3
    for row in rows:
        asked = [a for a, forms in QUESTIONS.items() if any(f.split("{name}")[0] in row["text"] for f in forms)]
        assert row["label"] in asked


def test_rerank_examples_about_others_never_name_a_held_out_person(world):
    rows = world.rerank_examples_about_others(200)
    held_out = [p.name for p in world.test_people]
    others = SyntheticWorld(200, seed=world.seed + 1)
    assert len({r["query"] for r in rows}) > 5 * len(world.train_people)
    for row in rows:
        assert not any(name in row["query"] or name in row["passage"] for name in held_out)
        name = next(p.name for p in others.people if p.name in row["query"])
        assert (name in row["passage"]) == (row["label"] == 1)


def test_pretraining_covers_everyone_and_loads(world_dir, world):
    texts = load_data(str(world_dir / "pretrain.txt"), columns=["text"])["text"]
    assert len(texts) == 40 * world.biographies_per_person
    assert all(any(p.name in t for t in texts) for p in world.people)
    assert "of She" not in " ".join(texts) and "of He " not in " ".join(texts)


def test_files_have_the_loader_columns(world_dir):
    retrieval = load_data(str(world_dir / "retrieval_train.jsonl"), columns=["query", "positive", "negative"])
    assert all(row["positive"] != row["negative"] for row in retrieval)  # a hard negative, not the answer again
    rerank = load_data(str(world_dir / "rerank_train.jsonl"), columns=["query", "passage", "label"])
    assert set(rerank["label"]) == {0, 1}
    chats = load_data(str(world_dir / "sft_train.jsonl"), columns=["messages"])
    assert all(chat[-1]["role"] == "assistant" for chat in chats["messages"])
    claims = load_data(str(world_dir / "claims_test.jsonl"), columns=["text", "label"])
    assert 0.3 < sum(claims["label"]) / len(claims) < 0.7  # true and false claims alike
    people = [json.loads(line) for line in (world_dir / "world.jsonl").read_text().splitlines()]
    assert {p["split"] for p in people} == {"train", "test"}


def test_bad_world_sizes():
    with pytest.raises(EttinError, match="people must be between"):
        SyntheticWorld(2)
    with pytest.raises(EttinError, match="held_out"):
        SyntheticWorld(20, held_out=1.5)
