"""The faster training step: the filter bank is materialised once per step (the spectrogram keeps it for
the TTF loss), with the same loss and (to rounding) gradients as building it twice, and never reused across steps."""

from __future__ import annotations

import torch

from audioclip.models import create_model
from audioclip.models.esresnext import ESResNeXtFBSP
from audioclip.models.fbsp import LinearFBSP


def _clips(n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.randn(n, 1, 44_100, generator=g) * 8000).clamp(-32768, 32767)


def _loss_and_grads(model, audio) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = model(audio)
    loss = out.square().mean() + model.ttf_loss()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _count_builds(monkeypatch) -> list[int]:
    calls: list[int] = []
    build = LinearFBSP.weights

    def counted(self, *args, **kwargs):
        calls.append(1)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(LinearFBSP, "weights", counted)
    return calls


def test_one_build_per_step_with_the_same_loss_and_gradients(monkeypatch) -> None:
    torch.manual_seed(0)
    model = create_model("esresnext-fbsp-tiny").train()
    audio = _clips()
    calls = _count_builds(monkeypatch)
    monkeypatch.setattr(ESResNeXtFBSP, "reuse_filter_bank", False)
    old_loss, old_grads = _loss_and_grads(model, audio)
    assert len(calls) == 2  # today's path: the spectrogram and the TTF loss each build it
    calls.clear()
    monkeypatch.setattr(ESResNeXtFBSP, "reuse_filter_bank", True)
    new_loss, new_grads = _loss_and_grads(model, audio)
    assert len(calls) == 1
    assert torch.equal(old_loss, new_loss)
    assert old_grads.keys() == new_grads.keys()
    for name in old_grads:
        # the two uses' gradients now meet at the bank, not at m, fb, fc: the same sums in another order
        torch.testing.assert_close(old_grads[name], new_grads[name], rtol=1e-5, atol=1e-9, msg=name)


def test_a_kept_bank_is_not_reused_after_the_parameters_change_or_without_gradients(monkeypatch) -> None:
    torch.manual_seed(0)
    model = create_model("esresnext-fbsp-tiny").train()
    calls = _count_builds(monkeypatch)
    model(_clips())
    with torch.no_grad():
        model.fbsp.fc.add_(0.5)  # an optimizer step changes the filter bank in place
    fresh = model.fbsp.weights(model.config.n_fft)
    ttf = model.ttf_loss()
    assert len(calls) == 3  # forward, the fresh one here, and the TTF loss's own (the kept one is stale)
    norms = torch.linalg.vector_norm(fresh, ord=2, dim=(-2, -1))
    assert torch.equal(ttf, torch.nn.functional.mse_loss(norms, torch.ones_like(norms)))
    calls.clear()
    with torch.no_grad():
        model(_clips())
        model.ttf_loss()
    assert len(calls) == 2  # nothing is kept without gradients


def test_a_bank_kept_by_a_step_without_ttf_loss_is_not_reused_by_the_next_forward() -> None:
    """A forward whose loss leaves out the TTF term keeps its bank, and its backward frees that bank's graph; with no
    optimizer step in between (a skipped step keeps the parameters' versions) the next forward must build its own."""
    torch.manual_seed(0)
    model = create_model("esresnext-fbsp-tiny").train()
    for _ in range(2):
        model(_clips()).square().mean().backward()  # would raise "Trying to backward through the graph a second time"
    model.zero_grad(set_to_none=True)
