import pytest
from transformers import AutoTokenizer

from ettin_ft.errors import EttinError
from ettin_ft.tokenizer import CHAT_TOKENS, add_chat_template, train_tokenizer

from .conftest import shared_data


def test_special_ids_follow_the_modernbert_layout(world):
    tokenizer = train_tokenizer(world.pretraining_texts(), vocab_size=600)
    assert len(tokenizer) == 600
    # Enough text for a full BPE vocabulary: the specials sit 88 ids before the end, as in ModernBERT.
    assert [tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
            tokenizer.mask_token_id] == [512, 513, 514, 515, 516]
    assert tokenizer.bos_token_id == tokenizer.cls_token_id and tokenizer.eos_token_id == tokenizer.sep_token_id


@pytest.mark.slow
def test_ettin_vocabulary_size_gives_the_ettin_special_ids():
    folder = shared_data("pretrain")
    texts = [line for path in sorted(folder.rglob("*.txt")) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = train_tokenizer(texts, vocab_size=50368, min_frequency=1)
    assert len(tokenizer) == 50368
    assert [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id] == [
        50281, 50282, 50283, 50284]
    assert tokenizer.convert_ids_to_tokens(50367) == "[unused82]"


def test_small_corpus_still_fills_the_vocabulary(world):
    tokenizer = train_tokenizer(world.pretraining_texts()[:20], vocab_size=4096)
    assert len(tokenizer) == 4096
    assert tokenizer.cls_token_id < 4096 - 87  # fewer merges: specials follow the BPE vocabulary directly


def test_encoder_post_processing(encoder_tokenizer):
    single = encoder_tokenizer("Alice was born")["input_ids"]
    assert single[0] == encoder_tokenizer.cls_token_id and single[-1] == encoder_tokenizer.sep_token_id
    pair = encoder_tokenizer("Where?", "Lisbon.")["input_ids"]
    assert pair[0] == encoder_tokenizer.cls_token_id
    assert pair.count(encoder_tokenizer.sep_token_id) == 2 and pair[-1] == encoder_tokenizer.sep_token_id
    assert encoder_tokenizer.decode(single, skip_special_tokens=True) == "Alice was born"


def test_decoder_post_processing(decoder_tokenizer):
    ids = decoder_tokenizer("Alice was born")["input_ids"]
    assert ids[0] == decoder_tokenizer.cls_token_id
    assert decoder_tokenizer.sep_token_id not in ids


def test_mask_token_is_one_token(encoder_tokenizer):
    ids = encoder_tokenizer("The capital is [MASK].")["input_ids"]
    assert ids.count(encoder_tokenizer.mask_token_id) == 1


def test_chat_template_and_round_trip(world, tmp_path):
    tokenizer = train_tokenizer(world.pretraining_texts(), vocab_size=512, arch="decoder")
    assert add_chat_template(tokenizer) == 2
    assert tokenizer.eos_token == "<|im_end|>"
    chat = [{"role": "user", "content": "Where was Alice born?"}, {"role": "assistant", "content": "Lisbon"}]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    assert text == "[CLS]<|im_start|>user\nWhere was Alice born?<|im_end|>\n<|im_start|>assistant\nLisbon<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    encoded = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    assistant = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(assistant) == "Lisbon<|im_end|>"
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.apply_chat_template(chat, tokenize=False) == text
    assert reloaded.eos_token == "<|im_end|>" and all(t in reloaded.get_vocab() for t in CHAT_TOKENS)
    assert reloaded("Alice")["input_ids"] == tokenizer("Alice")["input_ids"]


def test_bad_tokenizer_arguments():
    with pytest.raises(EttinError, match="too small"):
        train_tokenizer(["a b c"], vocab_size=100)
    with pytest.raises(EttinError, match="empty"):
        train_tokenizer([], vocab_size=1000)
    with pytest.raises(EttinError, match="architecture"):
        train_tokenizer(["a"], arch="seq2seq")
