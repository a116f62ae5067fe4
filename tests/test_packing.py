import pytest
import torch

from ettin_ft.models import build_model
from ettin_ft.training.objectives import PretrainingModule, packed_attention_inputs
from ettin_ft.training.packing import (
    SpecialIds,
    make_example,
    mask_tokens,
    next_token_labels,
    pack_documents,
    position_ids_of,
    shift_to_previous_position,
)

IDS = SpecialIds(cls=1, sep=2, pad=3, mask=4, vocab_size=100)


def documents(lengths, start=10):
    return [list(range(start, start + n)) for n in lengths]


@pytest.mark.parametrize("encoder", [True, False])
def test_rows_are_full_and_pieces_are_bracketed(encoder):
    lengths = [5, 40, 200, 3, 77, 64, 150, 9]
    rows = list(pack_documents(documents(lengths), 64, IDS, close_with_sep=encoder))
    assert all(len(ids) == len(docs) == 64 for ids, docs in rows)
    content = 0
    for ids, docs in rows:
        for piece in sorted(set(docs) - {-1}):
            tokens = [t for t, d in zip(ids, docs) if d == piece]
            assert tokens[0] == IDS.cls
            assert (tokens[-1] == IDS.sep) == encoder
            content += len(tokens) - (2 if encoder else 1)
    assert content == sum(lengths)  # every token lands in exactly one piece


def test_padding_stays_below_one_percent():
    lengths = torch.randint(1, 3000, (400,), generator=torch.Generator().manual_seed(0)).tolist()
    rows = list(pack_documents(documents(lengths), 1024, IDS, close_with_sep=True))
    padding = sum(ids.count(IDS.pad) for ids, _ in rows)
    assert padding / (1024 * len(rows)) < 0.01


def test_position_ids_restart_per_piece():
    docs = torch.tensor([[0, 0, 0, 1, 1, 2, -1, -1]])
    assert position_ids_of(docs).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]


def test_masking_rate_and_replacement_split():
    ids = torch.randint(10, 100, (200_000,))
    inputs, labels = mask_tokens(ids, IDS, 0.3, torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert abs(chosen.float().mean().item() - 0.3) < 0.01
    masked = (inputs[chosen] == IDS.mask).float().mean().item()
    unchanged = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.01
    assert abs(unchanged - 0.1) < 0.01  # random replacements that hit the same token are ~1% of 10%
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])


def test_specials_are_never_masked():
    ids = torch.tensor([IDS.cls] + [50] * 50 + [IDS.sep, IDS.pad, IDS.pad])
    _, labels = mask_tokens(ids, IDS, 0.99, torch.Generator().manual_seed(0))
    assert labels[0] == -100 and (labels[-3:] == -100).all()


def test_clm_and_mntp_labels_stay_in_their_piece():
    tokens = torch.tensor([1, 20, 21, 22, 1, 30, 31, 3])
    docs = torch.tensor([0, 0, 0, 0, 1, 1, 1, -1])
    assert next_token_labels(tokens, docs).tolist() == [20, 21, 22, -100, 30, 31, -100, -100]
    mlm = torch.tensor([-100, 20, -100, 22, -100, 30, -100, -100])
    assert shift_to_previous_position(mlm, docs).tolist() == [20, -100, 22, -100, 30, -100, -100, -100]


def test_same_row_gets_the_same_mask():
    ids, docs = next(pack_documents(documents([50, 50]), 64, IDS, close_with_sep=True))
    a = make_example(ids, docs, 7, "mlm", IDS, 0.3, seed=1)
    b = make_example(ids, docs, 7, "mlm", IDS, 0.3, seed=1)
    c = make_example(ids, docs, 8, "mlm", IDS, 0.3, seed=1)
    assert torch.equal(a["labels"], b["labels"]) and not torch.equal(a["labels"], c["labels"])


def test_no_two_rows_share_their_masking_draws():
    from ettin_ft.training.packing import masking_generator

    def draws(*key, **held_out):
        from ettin_ft.training.packing import uniform

        return uniform((8,), masking_generator(*key, **held_out)).tolist()

    # held-out row n was training row 10**9 + n, which an Ettin-scale phase (2 billion rows) reaches
    for row in (0, 10**9, 2 * 10**9, 10**12):
        assert draws(0, 10**9 + row) != draws(0, row, held_out=True) != draws(0, row)
    assert draws(0, 5) == draws(0, 5) != draws(0, 5, held_out=True)


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_packed_batch_matches_each_document_alone(arch, encoder_tokenizer, decoder_tokenizer):
    tokenizer = encoder_tokenizer if arch == "encoder" else decoder_tokenizer
    torch.manual_seed(0)
    model = build_model("tiny", arch, tokenizer=tokenizer, attn_implementation="sdpa").eval()
    ids = SpecialIds.of(tokenizer)
    texts = ["Alice Rae Ingram was born in Lisbon. She works for Halcyon Bank.",
             "Bruno Jo Eastwood studied at Oakridge College and majored in Geology. " * 3,
             "Cyrus Kai Lockhart grew up in Kyoto."]
    bodies = tokenizer(texts, add_special_tokens=False)["input_ids"]
    row, docs = next(pack_documents(bodies, 256, ids, close_with_sep=arch == "encoder"))
    example = make_example(row, docs, 0, "mlm" if arch == "encoder" else "clm", ids, 0.3, seed=0)
    batch = {k: v.unsqueeze(0) for k, v in example.items()}
    with torch.no_grad():
        packed = model.model(**packed_attention_inputs(model.model, batch, arch == "encoder")).last_hidden_state[0]
        doc_ids = example["doc_ids"]
        for piece in range(len(texts)):
            positions = (doc_ids == piece).nonzero().flatten()
            alone = model.model(input_ids=example["input_ids"][positions].unsqueeze(0)).last_hidden_state[0]
            torch.testing.assert_close(packed[positions], alone, atol=1e-5, rtol=1e-4)
        module = PretrainingModule(model)
        loss_sum, targets, _ = module(batch)
        assert targets == (example["labels"] != -100).sum() and torch.isfinite(loss_sum)


def tokenized(world, tokenizer):
    import datasets

    texts = world.pretraining_texts()
    return datasets.Dataset.from_dict({"input_ids": tokenizer(texts, add_special_tokens=False)["input_ids"]})


def test_several_loader_workers_yield_the_batches_of_one(world, encoder_tokenizer):
    """Each worker makes its share of the micro-batches; the loader's batches equal one worker's, in order."""
    import itertools

    from torch.utils.data import DataLoader

    from ettin_ft.pretrain import PretrainConfig
    from ettin_ft.training.data import PackedRows

    tokens = tokenized(world, encoder_tokenizer)
    config = PretrainConfig(arch="encoder", seq_len=64)

    def batches(workers: int) -> list[dict]:
        rows = PackedRows(tokens, config, SpecialIds.of(encoder_tokenizer), rows_per_step=8, rank=0, world_size=1,
                          start_row=8, batch_size=4)
        return list(itertools.islice(DataLoader(rows, batch_size=4, num_workers=workers), 6))

    one, two = batches(0), batches(2)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(one[0]["input_ids"], one[1]["input_ids"])


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_two_accumulated_micro_batches_make_the_step_of_one_batch(arch, world, encoder_tokenizer, decoder_tokenizer):
    """train_step: 2 micro-batches of b rows give the loss and the weights of one step on the 2b rows."""
    import itertools

    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from ettin_ft.pretrain import PretrainConfig
    from ettin_ft.runtime import choose_runtime
    from ettin_ft.training.data import PackedRows
    from ettin_ft.training.loop import make_optimizer, train_step

    tokenizer = encoder_tokenizer if arch == "encoder" else decoder_tokenizer
    config = PretrainConfig(arch=arch, seq_len=64, lr=1e-2, weight_decay=0.0)
    rows = list(itertools.islice(PackedRows(tokenized(world, tokenizer), config, SpecialIds.of(tokenizer),
                                            rows_per_step=8, rank=0, world_size=1), 8))
    whole = next(iter(DataLoader(rows, batch_size=8)))
    halves = list(DataLoader(rows, batch_size=4))
    accelerator = Accelerator(cpu=True)

    def one_step(micro_batches):
        torch.manual_seed(0)
        module = PretrainingModule(build_model("tiny", arch, tokenizer=tokenizer, attn_implementation="sdpa"))
        initial = {k: v.clone() for k, v in module.model.state_dict().items()}
        optimizer = make_optimizer(module.model, config, choose_runtime("cpu"))
        loss = train_step(module, accelerator, optimizer, micro_batches)
        return loss, initial, module.model.state_dict()

    loss_whole, initial, weights_whole = one_step([whole])
    loss_halves, _, weights_halves = one_step(halves)
    assert loss_halves == pytest.approx(loss_whole, rel=1e-5)
    for name, value in weights_whole.items():
        torch.testing.assert_close(weights_halves[name], value, atol=1e-5, rtol=1e-4)  # steps are ~1e-2
    assert sum(not torch.equal(initial[name], value) for name, value in weights_whole.items()) > 10  # the step moved them


def test_planned_rows_are_the_packing_of_each_epochs_shuffled_documents(world, encoder_tokenizer, monkeypatch):
    """PackedRows plans rows from lengths and reads only the tokens it needs; its rows must be those of packing
    the documents themselves, epoch after epoch in each epoch's order, across the epoch boundaries. Each epoch
    visits every document once, in an order of its own."""
    import itertools

    from ettin_ft.pretrain import PretrainConfig
    from ettin_ft.training import data

    monkeypatch.setattr(data, "SHUFFLE_BLOCK", 16)  # several blocks even in this small world
    tokens = tokenized(world, encoder_tokenizer)
    bodies = list(tokens["input_ids"])
    reader = data.TokenReader(tokens)
    orders = [[document for document, _ in data.epoch_order(reader, 7, epoch)] for epoch in range(3)]
    assert all(sorted(order) == list(range(len(bodies))) for order in orders)
    assert orders[0] != orders[1] != orders[2] and orders[0][:16] != list(range(16))
    # a block's documents come from across the corpus, not from one stretch of it (one source of a folder)
    assert all(max(order[:16]) - min(order[:16]) > len(bodies) / 2 for order in orders)
    assert [length for _, length in data.epoch_order(reader, 7, 0)] == [len(bodies[d]) for d in orders[0]]
    config = PretrainConfig(arch="encoder", seq_len=64, seed=7)
    ids = SpecialIds.of(encoder_tokenizer)
    expected = pack_documents((bodies[d] for order in orders for d in order), 64, ids, close_with_sep=True)
    rows = data.PackedRows(tokens, config, ids, rows_per_step=1, rank=0, world_size=1)
    count = 2 * sum(map(len, bodies)) // 64  # about two epochs
    for (input_ids, doc_ids), row in zip(itertools.islice(expected, count), itertools.islice(iter(rows), count)):
        assert row["doc_ids"].tolist() == doc_ids
        assert ((row["input_ids"] == torch.tensor(input_ids)) | (row["labels"] != -100)).all()  # masked where not equal


def test_a_resumed_stream_repeats_the_uninterrupted_batches(world, encoder_tokenizer):
    """Streamed (hub) data: started again after k micro-batches, the rows repeat the uninterrupted run's, masks
    included, epoch after epoch."""
    import itertools

    import datasets
    from torch.utils.data import DataLoader

    from ettin_ft.pretrain import PretrainConfig
    from ettin_ft.training.data import StreamedRows

    stream = datasets.Dataset.from_dict({"text": world.pretraining_texts()[:30]}).to_iterable_dataset()
    config = PretrainConfig(arch="encoder", seq_len=64)

    def batches(start_batch: int, count: int) -> list[dict]:
        rows = StreamedRows(stream, encoder_tokenizer, config, SpecialIds.of(encoder_tokenizer), rank=0, world_size=1,
                            start_batch=start_batch, batch_size=4)
        return list(itertools.islice(DataLoader(rows, batch_size=4), count))

    whole, resumed = batches(0, 30), batches(20, 10)  # 30 short documents make ~6 batches an epoch
    for a, b in zip(whole[20:], resumed, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(whole[0]["input_ids"], whole[1]["input_ids"])
