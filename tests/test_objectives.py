"""The chunked linear + cross-entropy equals the plain projection and loss, values and gradients."""

import torch
import torch.nn.functional as F

from ettin_ft.training.objectives import LinearCrossEntropy


def test_chunked_loss_and_gradients_match_the_plain_computation(monkeypatch):
    monkeypatch.setattr(LinearCrossEntropy, "CHUNK_ROWS", 96)  # several chunks, the last one partial
    torch.manual_seed(0)
    hidden = torch.randn(250, 32, requires_grad=True)
    weight = torch.randn(300, 32, requires_grad=True)
    bias = torch.randn(300, requires_grad=True)
    targets = torch.randint(0, 300, (250,))
    targets[:40] = (hidden[:40].detach() @ weight.detach().t() + bias.detach()).argmax(-1)  # some right guesses

    loss, correct = LinearCrossEntropy.apply(hidden, weight, bias, targets)
    (0.5 * loss).backward()
    chunked = [t.grad.clone() for t in (hidden, weight, bias)]
    for tensor in (hidden, weight, bias):
        tensor.grad = None
    logits = F.linear(hidden, weight, bias)
    reference = F.cross_entropy(logits, targets, reduction="sum")
    (0.5 * reference).backward()

    torch.testing.assert_close(loss, reference)
    assert correct.item() == (logits.argmax(-1) == targets).sum().item() >= 40
    for mine, tensor in zip(chunked, (hidden, weight, bias)):
        torch.testing.assert_close(mine, tensor.grad, rtol=1e-4, atol=1e-4)


def test_without_gradients_only_the_loss_is_computed():
    hidden, weight = torch.randn(10, 8), torch.randn(20, 8)
    targets = torch.randint(0, 20, (10,))
    with torch.no_grad():
        loss, _ = LinearCrossEntropy.apply(hidden, weight, None, targets)
    torch.testing.assert_close(loss, F.cross_entropy(hidden @ weight.t(), targets, reduction="sum"))
