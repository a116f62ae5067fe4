"""Paired studies: the plan (models × revisions × seeds), one process per run, the table, report and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ettin_ft.study.plan import StudyConfig, expand_revisions, plan
from ettin_ft.errors import EttinError

from .conftest import run_cli_main, shared_data


def compare(capsys, *args: str) -> SimpleNamespace:
    """``python -m ettin_ft.compare`` in this process (each of its runs still gets a process of its own)."""
    status, err, out = run_cli_main("compare", capsys, *args)
    return SimpleNamespace(returncode=status, stdout=out, stderr="\n".join(err))


def test_a_run_folder_expands_to_its_checkpoints_in_step_order(tmp_path):
    run = tmp_path / "run"
    for name in ("checkpoint-10", "checkpoint-2", "final", "checkpoint-5"):
        (run / name).mkdir(parents=True)
        (run / name / "config.json").write_text("{}")
    (run / "checkpoint-7").mkdir()  # a checkpoint being written (no config.json yet) is not a revision
    (run / "metrics.json").write_text(json.dumps({"train": {"steps": 12}}))
    assert [(r, s) for _, r, s in expand_revisions(str(run), "all")] == [
        ("checkpoint-2", 2), ("checkpoint-5", 5), ("checkpoint-10", 10), ("final", 12)]
    assert expand_revisions(str(run), None) == [(str(run / "final"), "final", 12)]
    assert expand_revisions(str(run), "10,final")[0] == (str(run / "checkpoint-10"), "checkpoint-10", 10)
    with pytest.raises(EttinError, match="has no checkpoint-7/; it has checkpoint-2, checkpoint-5, checkpoint-10, final"):
        expand_revisions(str(run), "7")
    with pytest.raises(EttinError, match="is one model folder"):
        expand_revisions(str(run / "final"), "all")


def test_sizes_and_archs_expand_to_paired_short_names(tmp_path):
    runs = plan(StudyConfig(recipe="classify", sizes="17m,32m", archs="encoder,decoder", seeds="0,1",
                            revisions="step1000,ext500", output_dir=str(tmp_path)))
    assert [r.model for r in runs[::4]] == ["encoder-17m", "decoder-17m", "encoder-32m", "decoder-32m"]
    first = runs[0]
    assert (first.spec, first.revision, first.step, first.seed) == ("jhu-clsp/ettin-encoder-17m@step1000", "step1000", 1000, 0)
    assert first.folder == str(tmp_path / "encoder-17m@step1000" / "seed-0")
    assert first.facts["arch"] == "encoder" and first.facts["size"] == "17m"
    assert runs[-1].facts["arch"] == "decoder" and runs[-1].spec == "jhu-clsp/ettin-decoder-32m@ext500"


@pytest.mark.parametrize("args, expected", [
    (["--recipe", "translate", "--models", "encoder-17m"], "--recipe translate: expected one of"),
    (["--recipe", "classify"], "--models (or --sizes) is required"),
    (["--recipe", "classify", "--models", "encoder-17m", "--seeds", "0,x"], "--seeds '0,x': expected integers"),
    (["--recipe", "classify", "--sizes", "17m", "--archs", "encoder,mixer"], "--archs mixer: expected"),
    (["--recipe", "classify", "--models", "no-such-folder"], "neither a local folder nor a hub id"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, expected, tmp_path, capsys):
    status, err, _ = run_cli_main("compare", capsys, *args, "--output-dir", str(tmp_path / "study"))
    assert status == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "study").exists()


@pytest.mark.slow  # four probe processes
def test_a_failed_run_is_recorded_and_a_rerun_keeps_the_finished_ones(tiny_encoder_dir, tiny_decoder_dir, tmp_path,
                                                                      capsys):
    winogender = shared_data("bias", "winogender")
    study = tmp_path / "study.yaml"
    output = tmp_path / "study"

    def write_study(decoder_args: list[str]) -> None:
        study.write_text(json.dumps({"recipe": "bias", "output_dir": str(output), "recipe_args": ["--data", str(winogender)],
                                     "models": [str(tiny_encoder_dir), {"name": str(tiny_decoder_dir), "args": decoder_args}]}))

    write_study(["--batch-size", "many"])
    result = compare(capsys, "--config", str(study))
    assert result.returncode == 1, result.stderr[-2000:]
    rows = json.loads((output / "comparison.json").read_text())
    assert [row["status"] for row in rows] == ["ok", "failed"]
    assert "--batch-size" in rows[1]["error"] and "many" in rows[1]["error"]
    probe = json.loads((Path(rows[0]["folder"]) / "metrics.json").read_text())
    assert rows[0]["preference_female"] == probe["preference"]["female"] and rows[1].get("preference_female") is None
    assert "## Failed runs" in (output / "REPORT.md").read_text()

    write_study([])
    result = compare(capsys, "--config", str(study))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((output / "comparison.json").read_text())
    assert [(row["status"], row["reused"]) for row in rows] == [("ok", True), ("ok", False)]
    assert "[1/2] " in result.stdout and "finished earlier, kept" in result.stdout


@pytest.mark.slow  # two runs of their own processes
def test_a_tagging_study_has_a_row_per_model_and_reports_f1(tiny_encoder_dir, tiny_decoder_dir, world_dir, tmp_path,
                                                           capsys):
    output = tmp_path / "study"
    result = compare(capsys, "--recipe", "tag", "--models", f"{tiny_encoder_dir},{tiny_decoder_dir}", "--output-dir",
                     str(output), "--", "--data", str(world_dir / "entities_train.jsonl"), "--eval-data",
                     str(world_dir / "entities_test.jsonl"), "--max-steps", "2", "--save-strategy", "no")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((output / "comparison.json").read_text())
    assert [(row["arch"], row["seed"], row["status"]) for row in rows] == [("encoder", 0, "ok"), ("decoder", 0, "ok")]
    for row in rows:
        metrics = json.loads((Path(row["folder"]) / "metrics.json").read_text())
        assert row["after_f1"] == metrics["after"]["f1"] and row["before_accuracy"] == metrics["before"]["accuracy"]
    assert "**f1**" in (output / "REPORT.md").read_text()


@pytest.mark.release  # ten runs of their own processes: about two and a half minutes
def test_study_over_two_checkpoints_of_a_pretrained_pair(pretrained_tiny, world100_dir, tmp_path, capsys):
    runs = [str(pretrained_tiny(arch).parent) for arch in ("encoder", "decoder")]
    common = ["--report-to", "none", "--disable-tqdm", "true", "--learning-rate", "1e-3"]
    studies = {
        "classify": ["--data", str(world100_dir / "topics_train.jsonl"), "--eval-data", str(world100_dir / "topics_test.jsonl"),
                     "--max-steps", "30", "--per-device-train-batch-size", "32", *common],
        # 90 steps of batch 16: both architectures' NDCG@10 rises well clear of its start
        "dense": ["--data", str(world100_dir / "retrieval_train.jsonl"), "--eval-beir", str(world100_dir / "retrieval_eval"),
                  "--held-out", "20", "--max-steps", "90", "--per-device-train-batch-size", "16",
                  "--batch-sampler", "no_duplicates", *common],
    }
    # the checkpoints through the cheaper recipe; dense (whose metric columns differ) on the final models only
    revisions = {"classify": (("checkpoint-100", "100"), ("final", "200")), "dense": (("final", "200"),)}
    for recipe, recipe_args in studies.items():
        output = tmp_path / recipe
        result = compare(capsys, "--recipe", recipe, "--models", ",".join(runs), "--revisions",
                         "all" if len(revisions[recipe]) > 1 else "final", "--output-dir", str(output), "--", *recipe_args)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        with open(output / "comparison.csv", encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [(row["arch"], row["revision"], row["step"], row["seed"], row["status"]) for row in rows] == [
            (arch, revision, step, "0", "ok") for arch in ("encoder", "decoder") for revision, step in revisions[recipe]]
        metric = "accuracy" if recipe == "classify" else "ndcg@10"
        for row in rows:  # every run trained: the metric rose
            assert float(row[f"after_{metric}"]) > float(row[f"before_{metric}"]), row
        assert json.loads((output / "comparison.json").read_text())[0]["after_" + metric] == float(rows[0]["after_" + metric])
        report = (output / "REPORT.md").read_text()
        assert f"**{metric}**" in report
        plots = ("metric_vs_size.png", "encoder_minus_decoder.png") + (("metric_vs_step.png",) if recipe == "classify" else ())
        assert recipe == "dense" or "not drawn" not in report, report
        for plot in plots:
            assert (output / plot).stat().st_size > 1000
    output = tmp_path / "zeroshot"  # no training: one run per checkpoint, the synthetic world's facts
    result = compare(capsys, "--recipe", "zeroshot", "--models", ",".join(runs), "--revisions", "all", "--output-dir", str(output),
                     "--", "--data", str(world100_dir / "zeroshot"), "--limit", "40")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads((output / "comparison.json").read_text())
    assert [(row["arch"], row["revision"], row["seed"], row["status"]) for row in rows] == [
        (arch, revision, None, "ok") for arch in ("encoder", "decoder") for revision in ("checkpoint-100", "final")]
    for row in rows:
        metrics = json.loads((Path(row["folder"]) / "metrics.json").read_text())
        assert row["acc_norm"] == metrics["average"]["acc_norm"] and row["employer_acc"] == metrics["tasks"]["employer"]["acc"]
    report = (output / "REPORT.md").read_text()
    assert "**acc_norm**" in report and "not drawn" not in report, report
    for plot in ("metric_vs_size.png", "metric_vs_step.png", "encoder_minus_decoder.png"):
        assert (output / plot).stat().st_size > 1000
    result = compare(capsys, "--recipe", "classify", "--models", ",".join(runs), "--revisions", "all",
                     "--output-dir", str(tmp_path / "classify"), "--", *studies["classify"])
    assert result.returncode == 0 and result.stdout.count("finished earlier, kept") == 4, result.stdout
