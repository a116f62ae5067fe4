import time

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from ettin_ft.models import build_model, load_model, model_config

from ettin_ft.runtime import choose_runtime

from ettin_ft.hub import locate
from ettin_ft.errors import EttinError
from ettin_ft.registry import SHAPES


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_config_follows_ettin_layout(arch):
    config = model_config("150m", arch)
    assert config.layer_types[:4] == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    assert config.sliding_window == 64  # a 128-token local window: 64 each side (encoder), 64 back (decoder)
    assert not config.attention_bias and not config.mlp_bias and not config.norm_bias
    assert config.tie_word_embeddings
    assert config.rope_parameters["full_attention"]["rope_theta"] == 10_000
    assert config.rope_parameters["sliding_attention"]["rope_theta"] == 10_000
    long = model_config("150m", arch, context=8192)
    assert long.rope_parameters["full_attention"]["rope_theta"] == 160_000
    assert long.max_position_embeddings == 8192
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (50281, 50282, 50283)


def test_tiny_is_small_and_keeps_the_layout(encoder_tokenizer):
    model = build_model("tiny", "encoder", tokenizer=encoder_tokenizer)
    assert 1e5 < sum(p.numel() for p in model.parameters()) < 5e6
    assert model.config.vocab_size == len(encoder_tokenizer)
    assert model.config.cls_token_id == encoder_tokenizer.cls_token_id
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    assert SHAPES["tiny"].layers == 4


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_tiny_forward_backward(arch, encoder_tokenizer, decoder_tokenizer):
    tokenizer = encoder_tokenizer if arch == "encoder" else decoder_tokenizer
    torch.manual_seed(0)
    model = build_model("tiny", arch, tokenizer=tokenizer)
    batch = tokenizer(["Alice was born in Lisbon.", "He works for Halcyon Bank."], padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    assert out.logits.shape == (*batch["input_ids"].shape, len(tokenizer))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def _inputs(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer(["Where was Alice born?", "Lisbon is a city."], padding=True, return_tensors="pt")


@pytest.mark.parametrize("arch,auto_class", [("encoder", AutoModelForMaskedLM), ("decoder", AutoModelForCausalLM)])
def test_save_reload_round_trip(arch, auto_class, tiny_encoder_dir, tiny_decoder_dir, tmp_path):
    folder = tiny_encoder_dir if arch == "encoder" else tiny_decoder_dir
    model = load_model(str(folder)).eval()
    reloaded = auto_class.from_pretrained(folder).eval()
    batch = _inputs(folder)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reloaded(**batch).logits, rtol=0, atol=0)
    model.save_pretrained(tmp_path)
    again = auto_class.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, again(**batch).logits, rtol=0, atol=0)
    assert type(AutoModel.from_pretrained(folder)).__name__ in ("ModernBertModel", "ModernBertDecoderModel")


def test_sentence_transformer_round_trip(tiny_encoder_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_encoder_dir), device="cpu")
    texts = ["Where was Alice born?", "Lisbon"]
    embeddings = model.encode(texts, convert_to_tensor=True)
    model.save(str(tmp_path))
    reloaded = SentenceTransformer(str(tmp_path), device="cpu")
    torch.testing.assert_close(embeddings, reloaded.encode(texts, convert_to_tensor=True))


def test_multi_vector_round_trip(tiny_encoder_dir, tmp_path):
    from sentence_transformers import MultiVectorEncoder

    model = MultiVectorEncoder(str(tiny_encoder_dir), device="cpu")
    texts = ["Where was Alice born?", "Lisbon"]
    embeddings = model.encode_document(texts)
    model.save_pretrained(str(tmp_path))
    reloaded = MultiVectorEncoder(str(tmp_path), device="cpu")
    for a, b in zip(embeddings, reloaded.encode_document(texts)):
        torch.testing.assert_close(a, b)


def test_offline_hub_load_fails_fast_with_one_line(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(EttinError) as error:
        load_model("17m")
    assert time.monotonic() - start < 30
    message = str(error.value)
    assert "\n" not in message and "jhu-clsp/ettin-encoder-17m" in message and "local folder" in message


def test_hub_offline_mode_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EttinError, match="HF_HUB_OFFLINE.*not in the local cache"):
        locate("decoder-150m")


def test_local_folder_without_model_is_rejected(tmp_path):
    with pytest.raises(EttinError, match="no config.json"):
        locate(str(tmp_path))


def test_wrong_architecture_is_rejected(tiny_decoder_dir):
    with pytest.raises(EttinError, match="is an Ettin decoder; this command needs an encoder"):
        load_model(str(tiny_decoder_dir), arch="encoder")


def test_runtime_choice_on_cpu_and_overrides():
    runtime = choose_runtime()
    if not torch.cuda.is_available():
        assert runtime.device.type == "cpu" and runtime.dtype == torch.float32
        assert runtime.attn_implementation == "sdpa"
    forced = choose_runtime("cpu", "bf16", "eager")
    assert (forced.dtype, forced.attn_implementation, forced.bf16) == (torch.bfloat16, "eager", True)
    with pytest.raises(EttinError, match="unknown precision"):
        choose_runtime(precision="fp8")
    with pytest.raises(EttinError, match="unknown attention kernel"):
        choose_runtime(attn_implementation="flash")


def broken_copy(model_dir, folder):
    """``model_dir`` without its first layer's weights: a checkpoint that does not fit its own config."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (model_dir / name).exists():
            (folder / name).write_text((model_dir / name).read_text())
    weights = load_file(model_dir / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "layers.0." not in k}, folder / "model.safetensors")
    return folder


def test_loading_is_checked_and_only_real_problems_are_reported(tiny_encoder_dir, tmp_path, caplog):
    """A pretraining checkpoint loaded as a classifier: its dropped MLM head and new classifier are expected and
    nothing is printed (transformers' table is held back); weights missing from the checkpoint give one warning
    naming them, from ettin-ft's check of the loading info."""
    import logging

    from transformers import AutoModelForSequenceClassification

    from ettin_ft.models import load_checked
    from ettin_ft.registry import resolve

    with caplog.at_level(logging.WARNING):
        load_checked(AutoModelForSequenceClassification, resolve(str(tiny_encoder_dir)), num_labels=2)
    assert caplog.records == []
    broken = broken_copy(tiny_encoder_dir, tmp_path / "broken")
    with caplog.at_level(logging.WARNING):
        load_checked(AutoModelForSequenceClassification, resolve(str(broken)), num_labels=2)
    assert len(caplog.records) == 1 and "LOAD REPORT" not in caplog.text, caplog.text
    assert "weights not loaded as expected (missing: " in caplog.text and "layers.0." in caplog.text


def test_a_library_loaded_model_is_checked_against_its_checkpoint(tiny_encoder_dir, tmp_path, caplog):
    """sentence-transformers loads the backbone itself: its parameters are compared with the checkpoint's tensor
    names. The base model of an MLM checkpoint (head dropped) passes quietly; a checkpoint missing a layer warns."""
    import logging

    from sentence_transformers import models

    from ettin_ft.models import load_through_library
    from ettin_ft.registry import resolve

    def load(folder):
        return load_through_library(resolve(str(folder)), lambda: models.Transformer(str(folder)),
                                    lambda built: built.auto_model)

    with caplog.at_level(logging.WARNING):
        load(tiny_encoder_dir)
    assert caplog.records == []
    with caplog.at_level(logging.WARNING):
        load(broken_copy(tiny_encoder_dir, tmp_path / "broken"))
    assert len(caplog.records) == 1 and "LOAD REPORT" not in caplog.text, caplog.text
    assert "missing: " in caplog.text and "layers.0." in caplog.text
