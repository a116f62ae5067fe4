"""Paired studies: one recipe over encoders and decoders, sizes, training checkpoints and seeds, into one table.

Each run is an ordinary recipe run in its own folder and process (DIR/<model>@<revision>/seed-<n>/), so one
failure cannot take the study down; finished runs are kept on a rerun. Everything after ``--`` goes to the
recipe unchanged. Writes DIR/comparison.csv and .json (one row per run), DIR/REPORT.md (mean ± std over seeds)
and plots: the metric against model size (one line per architecture), against the pretraining step (with
--revisions) and the encoder-minus-decoder difference per size.

    python -m ettin_ft.compare --recipe classify --models encoder-17m,decoder-17m,enc-from-dec-17m \
        --seeds 0,1,2 --output-dir runs/cmp -- --task sst2
    python -m ettin_ft.compare --recipe dense --sizes 17m,32m --archs encoder,decoder --output-dir runs/cmp-dense
    python -m ettin_ft.compare --recipe classify --models runs/pretrain-enc,runs/pretrain-dec --revisions all \
        --output-dir runs/dynamics -- --data ../shared/data/classification/sst2
    python -m ettin_ft.compare --recipe bias --models encoder-150m,decoder-150m --output-dir runs/bias \
        -- --data ../shared/data/bias/winogender
    python -m ettin_ft.compare --recipe zeroshot --sizes 17m,32m --output-dir runs/zs -- --data ../shared/data/zeroshot
"""

from __future__ import annotations

import sys

from .config import parse_config
from .errors import cli_entry
from .study.plan import StudyConfig, split_arguments
from .study.run import run_study


@cli_entry
def main(argv: list[str] | None = None) -> None:
    study_args, recipe_args = split_arguments(sys.argv[1:] if argv is None else list(argv))
    config, dry_run = parse_config(
        StudyConfig, argv=study_args, prog="python -m ettin_ft.compare",
        description="Run one recipe over several models, revisions and seeds (arguments after -- go to the recipe), "
                    "then write comparison.csv/.json, REPORT.md and plots.")
    rows = run_study(config, recipe_args, dry_run)
    failed = [r for r in rows if r["status"] != "ok"]
    if rows:
        print(f"{len(rows) - len(failed)}/{len(rows)} runs finished; {config.output_dir}/REPORT.md")
    if failed:
        print(f"error: {len(failed)} run(s) failed; see {config.output_dir}/REPORT.md", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
