"""The quickstart at its default settings, whose results the README quotes: every stage beats its starting point,
the reranker included (it needs its 1,000 steps). About six minutes on two cores, so it runs after the README's
test command, in .ci/run (python -m pytest tests/release)."""

from ..test_quickstart import assert_report_and_every_stage_improved, winogender


def test_the_default_quickstart_improves_every_stage(tmp_path):
    from ettin_ft.quickstart import STAGE_NAMES, QuickstartConfig, run_quickstart

    run_quickstart(QuickstartConfig(output_dir=str(tmp_path / "run"), bias_data=winogender()))
    assert_report_and_every_stage_improved(tmp_path / "run", STAGE_NAMES)
