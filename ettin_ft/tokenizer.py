"""Offline Ettin tokenizers: byte-level BPE with the ModernBERT special tokens, and ChatML for decoders.

The vocabulary is laid out like ModernBERT's: BPE tokens first, then [UNK] [CLS] [SEP] [PAD] [MASK] and
unused slots up to ``vocab_size``, so at the Ettin size of 50368 the special ids are exactly
[CLS]=50281, [SEP]=50282, [PAD]=50283, [MASK]=50284.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .errors import EttinError
from .registry import VOCAB_SIZE

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
# ModernBERT reserves 88 ids after its BPE vocabulary: the five specials above and 83 unused slots.
RESERVED_IDS = 88
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]

# ChatML. BOS ([CLS]) opens every conversation as in decoder pretraining; the generation markers let
# trainers build assistant-only loss masks (return_assistant_tokens_mask).
CHATML_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _post_processor(arch: str, cls_id: int, sep_id: int) -> processors.TemplateProcessing:
    specials = [("[CLS]", cls_id), ("[SEP]", sep_id)]
    if arch == "encoder":
        return processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=specials
        )
    # Pairs (sequence classification) are joined by [SEP] and end on the second text's last token, where a
    # decoder classifier reads its prediction.
    return processors.TemplateProcessing(single="[CLS] $A", pair="[CLS] $A [SEP] $B:1", special_tokens=specials)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = VOCAB_SIZE,
    arch: str = "encoder",
    *,
    min_frequency: int = 2,
    model_max_length: int = 8192,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with the Ettin special tokens and post-processing for ``arch``."""
    if arch not in ("encoder", "decoder"):
        raise EttinError(f"unknown architecture {arch!r}; expected 'encoder' or 'decoder'")
    if vocab_size < 256 + RESERVED_IDS + 1:
        raise EttinError(f"vocab_size {vocab_size} is too small: byte-level BPE needs at least {256 + RESERVED_IDS + 1}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - RESERVED_IDS,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if tokenizer.get_vocab_size() <= 256:
        raise EttinError("the tokenizer corpus is empty: no text to learn merges from")
    # A small corpus yields fewer merges: the specials then follow the BPE vocabulary directly, and the
    # unused slots still pad the vocabulary up to vocab_size.
    unused = [f"[unused{i}]" for i in range(vocab_size - tokenizer.get_vocab_size() - len(SPECIAL_TOKENS))]
    tokenizer.add_special_tokens(
        [AddedToken(t, lstrip=(t == "[MASK]"), normalized=False, special=True) for t in SPECIAL_TOKENS + unused]
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = _post_processor(arch, cls_id, sep_id)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        bos_token="[CLS]",
        eos_token="[SEP]",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def set_post_processing(tokenizer, arch: str) -> None:
    """Switch a tokenizer between encoder (``[CLS] A [SEP]``) and decoder (``[CLS] A``) post-processing."""
    tokenizer.backend_tokenizer.post_processor = _post_processor(arch, tokenizer.cls_token_id, tokenizer.sep_token_id)


def encode_words_as_in_text(tokenizer) -> None:
    """Pre-split words (``is_split_into_words``) encoded as in running text: byte-level BPE (Ettin's, GPT-2's) marks a
    word's start by the space before it, which a lone word lacks unless the pre-tokenizer adds one. transformers 5
    ignores ``add_prefix_space=True`` for such tokenizers, so it is set on the pre-tokenizer itself (and saved)."""
    from tokenizers import pre_tokenizers

    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    if isinstance(pre_tokenizer, pre_tokenizers.ByteLevel):
        pre_tokenizer.add_prefix_space = True


def add_chat_template(tokenizer) -> int:
    """Give a decoder tokenizer ChatML: the <|im_start|>/<|im_end|> tokens, the template, eos = <|im_end|>.

    Returns the number of tokens added, so the caller can resize the model's embeddings.
    """
    added = tokenizer.add_special_tokens({"additional_special_tokens": CHAT_TOKENS})
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.eos_token = "<|im_end|>"
    return added


def add_chat_support(model, tokenizer) -> None:
    """Give a decoder and its tokenizer ChatML if the tokenizer has no chat template yet.

    Ettin decoders ship without one: the <|im_start|>/<|im_end|> tokens are added offline and the
    embeddings resized (new rows drawn around the mean of the old ones); generation stops at <|im_end|>.
    """
    if tokenizer.chat_template is not None:
        return
    add_chat_template(tokenizer)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
