import json
import subprocess
import sys

import pytest

from ettin_ft.errors import EttinError
from ettin_ft.registry import NOMINAL_PARAMETERS, OFFICIAL_SIZES, resolve
from ettin_ft.models import registry_rows


@pytest.mark.parametrize("size", OFFICIAL_SIZES)
def test_short_names_resolve_per_architecture(size):
    assert resolve(size).path == f"jhu-clsp/ettin-encoder-{size}"
    assert resolve(size, "decoder").path == f"jhu-clsp/ettin-decoder-{size}"
    assert resolve(f"decoder-{size}").arch == "decoder"
    assert resolve(f"enc-from-dec-{size}").path == f"jhu-clsp/ettin-enc-from-dec-{size}"
    assert resolve(f"enc-from-dec-{size}").arch == "encoder"
    assert resolve(f"dec-from-enc-{size}").path == f"jhu-clsp/ettin-dec-from-enc-{size}"
    assert resolve(f"dec-from-enc-{size}").arch == "decoder"


def test_hub_ids_and_local_paths_pass_through(tmp_path):
    ref = resolve("jhu-clsp/ettin-encoder-150m@step599525")
    assert (ref.path, ref.revision, ref.local) == ("jhu-clsp/ettin-encoder-150m", "step599525", False)
    assert resolve("someone/my-model").revision is None
    local = resolve(str(tmp_path))
    assert local.local and local.path == str(tmp_path)


@pytest.mark.parametrize("name", ["huge", "tiny", "a/b/c", "encoder-3m"])
def test_unknown_names_are_clear_errors(name):
    with pytest.raises(EttinError, match="tiny|neither"):
        resolve(name)


def test_official_shapes_sizes_and_global_layers():
    import torch

    from ettin_ft.models import build_model

    rows = registry_rows()
    assert len(rows) == 12
    for row in rows:
        with torch.device("meta"):  # the table describes the models build_model makes
            config = build_model(row["name"], row["arch"]).config
        assert (row["layers"], row["hidden"], row["intermediate"], row["heads"]) == (
            config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.num_attention_heads)
        assert [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"] == row["global_layers"]
        assert row["global_layers"] == list(range(0, config.num_hidden_layers, 3))  # a global layer every third
        assert row["vocab"] == 50368
        assert abs(row["parameters"] / NOMINAL_PARAMETERS[row["name"]] - 1) < 0.04, row
    one_b = next(r for r in rows if r["name"] == "1b")
    assert 1.02e9 < one_b["parameters"] < 1.04e9


@pytest.mark.slow  # a fresh interpreter that imports the stack
def test_models_cli_json():
    out = subprocess.run([sys.executable, "-m", "ettin_ft.models", "--json"], capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    assert {(r["name"], r["arch"]) for r in rows} == {(s, a) for s in OFFICIAL_SIZES for a in ("encoder", "decoder")}
    assert set(rows[0]) == {"name", "arch", "hub_id", "layers", "hidden", "intermediate", "heads", "vocab",
                            "global_layers", "parameters"}
