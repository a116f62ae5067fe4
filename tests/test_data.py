import json

import datasets
import pytest

from ettin_ft.data.loading import load_beir, load_data
from ettin_ft.errors import EttinError

from .conftest import shared_data

ROWS = [{"query": "Where was Alice born?", "positive": "Alice was born in Lisbon."},
        {"query": "Who employs Bruno?", "positive": "Bruno works for Halcyon Bank."}]


def write_all_formats(folder):
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "pairs.json").write_text(json.dumps(ROWS))
    (folder / "pairs.csv").write_text("query,positive\n" + "".join(f'"{r["query"]}","{r["positive"]}"\n' for r in ROWS))
    datasets.Dataset.from_list(ROWS).to_parquet(str(folder / "pairs.parquet"))
    (folder / "text.txt").write_text("first line\n\nsecond line\n")


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.json", "pairs.csv", "pairs.parquet"])
def test_every_table_format_loads_the_same_rows(tmp_path, name):
    write_all_formats(tmp_path)
    dataset = load_data(str(tmp_path / name), columns=["query", "positive"])
    assert dataset.to_list() == ROWS


def test_text_files_give_one_row_per_line(tmp_path):
    write_all_formats(tmp_path)
    assert load_data(str(tmp_path / "text.txt"), columns=["text"])["text"] == ["first line", "second line"]


def test_folder_concatenates_files_of_one_type(tmp_path):
    for i in range(2):
        (tmp_path / f"part{i}.jsonl").write_text(json.dumps(ROWS[i]) + "\n")
    assert load_data(str(tmp_path)).to_list() == ROWS


def test_column_mapping_and_limit(tmp_path):
    write_all_formats(tmp_path)
    dataset = load_data(str(tmp_path / "pairs.jsonl"), columns=["anchor", "positive"],
                        column_mapping={"query": "anchor"}, limit=1)
    assert dataset.column_names == ["anchor", "positive"] and len(dataset) == 1


def test_real_shared_pairs_load():
    dataset = load_data(str(shared_data("retrieval_pairs", "snli_dev_triplets.jsonl")),
                        columns=["query", "positive", "negative"])
    assert len(dataset) == 2943


def test_missing_column_names_file_found_and_expected(tmp_path):
    write_all_formats(tmp_path)
    with pytest.raises(EttinError) as error:
        load_data(str(tmp_path / "pairs.jsonl"), columns=["anchor", "positive"])
    message = str(error.value)
    assert "pairs.jsonl" in message and "anchor" in message and "found query, positive" in message
    assert "\n" not in message


def test_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(EttinError, match="empty.jsonl: no rows"):
        load_data(str(tmp_path / "empty.jsonl"))


def test_malformed_line_is_located(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(EttinError, match="bad.jsonl line 2: malformed JSON"):
        load_data(str(tmp_path / "bad.jsonl"))
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(EttinError, match="line 1: expected a JSON object"):
        load_data(str(tmp_path / "list.jsonl"))


def test_unreadable_files(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(EttinError, match="broken.parquet: cannot read it as parquet"):
        load_data(str(tmp_path / "broken.parquet"))
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(EttinError, match="latin.txt: not UTF-8"):
        load_data(str(tmp_path / "latin.txt"))
    (tmp_path / "data.xml").write_text("<a/>")
    with pytest.raises(EttinError, match="unsupported file type"):
        load_data(str(tmp_path / "data.xml"))


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 2**20])
def test_the_first_byte_that_is_not_utf8_is_located_across_reads(tmp_path, chunk_bytes):
    from ettin_ft.data.text import check_utf8

    path = tmp_path / "text.txt"
    path.write_bytes("ab€\nx".encode() + b"\xff" + "é".encode())  # € is 3 bytes long, so the bad byte is the 7th
    with pytest.raises(EttinError, match=r"text.txt: not UTF-8 text \(byte offset 7\)"):
        check_utf8(str(path), chunk_bytes)
    path.write_bytes("ab€".encode()[:-1])  # a character cut off at the end
    with pytest.raises(EttinError, match=r"byte offset 2\)"):
        check_utf8(str(path), chunk_bytes)
    path.write_bytes("ab€\né".encode())
    check_utf8(str(path), chunk_bytes)


def test_missing_paths_and_bad_names(tmp_path):
    with pytest.raises(EttinError, match="does not exist"):
        load_data(str(tmp_path / "nope.jsonl"))
    with pytest.raises(EttinError, match="neither a local file"):
        load_data("not-a-dataset")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    (tmp_path / "mixed" / "b.csv").write_text("query\nx\n")
    with pytest.raises(EttinError, match="mixes file types"):
        load_data(str(tmp_path / "mixed"))


def test_unreachable_hub_dataset_is_one_line():
    with pytest.raises(EttinError, match="cannot load dataset 'sentence-transformers/gooaq'.*local"):
        load_data("sentence-transformers/gooaq")


def test_beir_folder_is_not_training_data(world_dir):
    with pytest.raises(EttinError, match="BEIR folder"):
        load_data(str(world_dir / "retrieval_eval"))


@pytest.mark.parametrize("name,docs,queries", [("scifact", 5183, 300), ("cranfield", 1400, 225)])
def test_real_beir_sets_load(name, docs, queries):
    split = load_beir(str(shared_data("retrieval_eval", name)))
    assert len(split.corpus) == docs and len(split.queries) == queries
    assert all(split.qrels[q] for q in split.queries)


def test_beir_errors(tmp_path, world_dir):
    with pytest.raises(EttinError, match="does not exist"):
        load_beir(str(tmp_path / "none"))
    with pytest.raises(EttinError, match="missing qrels/dev.tsv"):
        load_beir(str(world_dir / "retrieval_eval"), split="dev")
