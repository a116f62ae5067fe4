"""The main job: the quickstart at its default settings end to end (every stage improves on its start), its report,
its stage folders, and the skipping of finished stages.

The default run takes about six minutes on two cores, so it is among the release checks that .ci/run runs after the
README's test command; the README's command keeps the quickstart's quick checks (and tests/test_every_field.py and
tests/test_process_state.py run single quickstart stages). A reduced run (fewer steps, no reranker) proved less and
cost about 150 s of the README's command.
"""

import json
import os

import pytest

from .conftest import SHARED_DATA, run_cli_main


def winogender() -> str | None:
    folder = SHARED_DATA / "bias" / "winogender"
    return str(folder) if folder.is_dir() else None


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    from ettin_ft.quickstart import QuickstartConfig, run_quickstart

    folder = tmp_path_factory.mktemp("quickstart") / "run"
    run_quickstart(QuickstartConfig(output_dir=str(folder), bias_data=winogender()))
    return folder


@pytest.mark.release
def test_the_default_quickstart_improves_every_stage(quickstart_dir):
    from ettin_ft.quickstart import STAGE_NAMES

    assert_report_and_every_stage_improved(quickstart_dir, STAGE_NAMES)


def assert_report_and_every_stage_improved(quickstart_dir, stage_names: list[str]):
    results = json.loads((quickstart_dir / "results.json").read_text())
    assert [r["stage"] for r in results["stages"]] == stage_names
    for record in results["stages"]:
        before, after = record["before"][record["metric"]], record["after"][record["metric"]]
        assert record["improved"] == (after > before if record["higher_is_better"] else after < before)
        assert record["improved"], record
        assert record["wall_time_s"] > 0 and os.path.isdir(quickstart_dir / record["output"])
    by_name = {r["stage"]: r for r in results["stages"]}
    assert "eval_accuracy" in by_name["pretrain-encoder"]["after"]  # masked-token accuracy
    assert {"held_out_loss", "held_out_exact_match"} <= set(by_name["sft"]["after"])
    assert {"accuracy", "macro_f1"} <= set(by_name["classify-decoder"]["after"])
    assert results["plots"] == ["loss_curves.png", "before_after.png", "encoder_vs_decoder.png"]
    for plot in results["plots"]:
        assert (quickstart_dir / plot).read_bytes()[:4] == b"\x89PNG"
    report = (quickstart_dir / "REPORT.md").read_text()
    assert all(f"| {name} |" in report for name in stage_names) and "![" in report
    # zero-shot facts: the decoder learns them in pretraining (beyond two standard errors of a guesser and of its
    # untrained self); the encoder is reported by both rules, as measured
    zeroshot = results["zeroshot"]
    assert set(zeroshot) == {"encoder (l2r)", "encoder (pll)", "decoder"}
    decoder = zeroshot["decoder"]
    error = (decoder["random"] * (1 - decoder["random"]) / decoder["items"]) ** 0.5
    assert decoder["random"] == pytest.approx(0.25) and decoder["after"]["acc"] > decoder["random"] + 2 * error
    assert decoder["after"]["acc"] > decoder["before"]["acc"] + 2 * error
    assert "## Zero-shot facts" in report and "| encoder (pll) | 400 |" in report  # 4 facts of 100 people
    if results["config"]["bias_data"]:  # the probe of both pretrained models, beside the other results
        assert set(results["bias"]) == {"encoder", "decoder"}
        for arch, probe in results["bias"].items():  # the shares of the items' preferred pronouns, as counted
            items = [json.loads(line) for line in (quickstart_dir / f"bias-{arch}" / "items.jsonl").read_text().splitlines()]
            assert probe["preference"] == pytest.approx(
                {gender: sum(item["preferred"] == gender for item in items) / len(items) for gender in probe["preference"]})
        assert "| encoder |" in report and "| decoder |" in report and "WinoGender" in report


@pytest.mark.release
def test_every_final_folder_has_a_model_card_with_its_metrics(quickstart_dir):
    from huggingface_hub import ModelCard

    for record in json.loads((quickstart_dir / "results.json").read_text())["stages"]:
        run = quickstart_dir / record["stage"]
        card = ModelCard.load(run / "final" / "README.md")
        metrics = json.loads((run / "metrics.json").read_text())
        metric = record["metric"]
        assert f"| {metric} | {json.dumps(metrics['before'][metric])} | {json.dumps(metrics['after'][metric])} |" in card.text
        assert "ettin-ft" in card.data.tags and "Intended use" in card.text, record["stage"]


@pytest.mark.release
def test_stage_folders_are_ordinary_recipe_outputs(quickstart_dir):
    from sentence_transformers import SentenceTransformer

    embedder = SentenceTransformer(str(quickstart_dir / "dense-decoder" / "final"), device="cpu")
    assert embedder.encode(["Where was Ada born?"]).shape[0] == 1
    assert (quickstart_dir / "lora" / "final" / "adapter_config.json").exists()


@pytest.mark.release
def test_a_rerun_skips_finished_stages(quickstart_dir, capsys):
    (quickstart_dir / "dense-decoder" / "stage.json").unlink()
    before = {p: p.stat().st_mtime for p in quickstart_dir.glob("*/stage.json")}
    status, err, out = run_cli_main("quickstart", capsys, "--output-dir", str(quickstart_dir))
    assert status == 0, err[-5:]
    assert out.count("finished earlier, skipped") == 12
    assert "[9/13] dense-decoder: dense embedder from the decoder (mean pooling)\n" in out
    assert {p: p.stat().st_mtime for p in quickstart_dir.glob("*/stage.json") if p in before} == before
    assert (quickstart_dir / "dense-decoder" / "stage.json").exists()


def test_unknown_stage_is_one_line(tmp_path, capsys):
    status, err, _ = run_cli_main("quickstart", capsys, "--output-dir", str(tmp_path / "q"), "--stages", "dense,bogus")
    assert status == 2 and err == ["error: --stages: unknown stage(s) bogus; expected some of pretrain-encoder, "
                                   "pretrain-decoder, dense, colbert, sparse, rerank, sft, lora, dense-decoder, classify, "
                                   "classify-decoder, tag, tag-decoder"]
    assert not (tmp_path / "q").exists()


@pytest.mark.release
def test_other_settings_in_the_same_folder_are_refused(quickstart_dir, capsys):
    status, err, _ = run_cli_main("quickstart", capsys, "--output-dir", str(quickstart_dir), "--people", "80")
    assert status == 2 and len(err) == 1 and "other settings (people 100 → 80)" in err[0], err
