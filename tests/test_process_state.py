"""Calling the package leaves the process as it was: logging, progress bars, plotting backend, environment and
accelerate's state come back to what the caller had (a notebook runs one recipe after another)."""

import os

from .test_pretrain import small_run


def process_state() -> dict:
    import datasets
    import matplotlib
    import transformers
    from accelerate.state import AcceleratorState

    return {"transformers verbosity": transformers.logging.get_verbosity(),
            "transformers bars": transformers.utils.logging.is_progress_bar_enabled(),
            "datasets bars": datasets.utils.logging.is_progress_bar_enabled(),
            "matplotlib backend": matplotlib.get_backend(), "environment": dict(os.environ),
            "accelerate": dict(AcceleratorState._shared_state)}


def test_calls_leave_the_process_as_they_found_it(tiny_encoder_dir, world_dir, tmp_path, capsys):
    import importlib
    import pkgutil

    import transformers

    import ettin_ft
    from ettin_ft.config import parse_config
    from ettin_ft.data.loading import load_data
    from ettin_ft.fill_mask import main as fill_mask_main
    from ettin_ft.plots import lines_with_spread
    from ettin_ft.pretrain import PretrainConfig
    from ettin_ft.quickstart import run_quickstart, QuickstartConfig

    import lm_eval  # noqa: F401  (dependencies set variables as they are imported: theirs, not the package's)
    import matplotlib
    import sklearn  # noqa: F401

    # a caller's own settings, away from the libraries' defaults
    transformers.logging.set_verbosity_info()
    backend = matplotlib.get_backend()
    matplotlib.use("svg")
    before = process_state()
    for module in pkgutil.walk_packages(ettin_ft.__path__, "ettin_ft."):
        importlib.import_module(module.name)
    load_data(str(world_dir / "retrieval_train.jsonl"))
    lines_with_spread(str(tmp_path / "plot.png"), {"a": [(1, 0.5, 0.1), (2, 0.6, 0.1)]}, "x", "y", "t")
    fill_mask_main(["--model", str(tiny_encoder_dir), "Ada was born in [MASK]."])
    config, _ = parse_config(PretrainConfig, argv=small_run(world_dir / "pretrain.txt", tmp_path / "pretrain",
                                                            "--max-steps", "4"))
    ettin_ft.run_pretraining(config)
    # the quickstart's verbosity covers its stages; its first stage alone shows it
    run_quickstart(QuickstartConfig(output_dir=str(tmp_path / "quickstart"), stages="pretrain-encoder", people=20,
                                    steps=6))
    capsys.readouterr()
    after = process_state()
    environment = {k: (before["environment"].get(k), after["environment"].get(k))
                   for k in before["environment"].keys() | after["environment"].keys()
                   if before["environment"].get(k) != after["environment"].get(k)}
    assert not environment, environment
    assert after == before, {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    transformers.logging.set_verbosity_warning()
    matplotlib.use(backend)
