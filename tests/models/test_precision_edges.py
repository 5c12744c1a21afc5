"""Precision at the edges: the fbsp front end always computes in fp32, the filter-bank gradient rule
runs after loss-scale unscaling, and precisions that would cast the filter bank to half are refused."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from optim_group import sgd
from torch.utils.data import DataLoader

from audioclip.cli import main
from audioclip.models import create_model
from audioclip.tasks import FinetuneModule

FBSP = ("audio.fbsp.m", "audio.fbsp.fb", "audio.fbsp.fc")


def _clips(n: int = 4, seconds: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return (torch.randn(n, 1, int(44_100 * seconds), generator=g) * 8000).clamp(-32768, 32767)


def test_front_end_of_a_half_precision_module_stays_finite_and_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = create_model("esresnext-fbsp-tiny").eval()
    audio = _clips(2)
    reference = model.spectrogram(audio)
    # in fp16 `(x + 32768) * 2` reaches 131070 > 65504: a front end computing in the module's dtype gives inf
    half = model.half().spectrogram(audio.half())
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    # the fp16-rounded window and filter-bank parameters move some low-power bins; most stay within 0.5 dB
    assert (half - reference).abs().median() < 0.5


def _one_step(precision: str, batchnorm_statistics: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = FinetuneModule(model="audioclip-tiny", **sgd(lr=0.1))
    if not batchnorm_statistics:
        # Lightning keeps the mode it is given: BatchNorm then normalises with its running statistics, so the
        # comparison across precisions is about the step, not about fp16 batch statistics
        module.model.eval()
    initial = {n: p.detach().clone() for n, p in module.model.named_parameters()}

    class Names(L.LightningDataModule):
        class_names = ["dog", "rain"]

        def train_dataloader(self) -> DataLoader:
            audio = _clips(4)
            items = [{"audio": audio[i], "target": i % 2, "id": str(i)} for i in range(4)]
            return DataLoader(items, batch_size=4)

    trainer = L.Trainer(
        accelerator="cpu", precision=precision, max_steps=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=Names())
    return {n: p.detach() - initial[n] for n, p in module.model.named_parameters() if n in FBSP}


def test_fp16_mixed_step_moves_the_filter_bank_as_fp32_does() -> None:
    """The gradient rule (divide by the max-abs) runs after the GradScaler unscales: run on the scaled gradient, the
    filter bank's step would be 1/65536 of fp32's."""
    fp32, mixed = _one_step("32-true"), _one_step("16-mixed")
    for name in FBSP:
        # lr x (1 + momentum) x a gradient of max-abs 1: Nesterov's first step
        assert fp32[name].abs().max() == pytest.approx(0.1 * 1.9, rel=1e-3)
        # the same step up to the fp16 rounding of the gradients: the same largest move (the rule's), the same
        # direction; on the loss-scaled gradient the rule would give a step 65536 times too small
        assert mixed[name].abs().max() == pytest.approx(fp32[name].abs().max().item(), rel=1e-2)
        assert torch.nn.functional.cosine_similarity(mixed[name], fp32[name], dim=0) > 0.95


@pytest.mark.parametrize("precision", ["16-true", "bf16-true"])
def test_true_half_precisions_are_refused_in_one_line(precision: str, tmp_path, capsys) -> None:
    from audioclip.data.synthetic import write_esc50

    root = write_esc50(tmp_path / "esc50", clips_per_class=2, classes=2, seed=0, progress=False)
    conf = Path(__file__).resolve().parents[2] / "conf"
    code = main(["fit", "--config", str(conf / "trainer.yaml"), "--config", str(conf / "finetune-esc50.yaml"),
                 "--model.init_args.model", "audioclip-tiny", "--model.init_args.init_from", "null",
                 "--data.init_args.root", str(root), "--trainer.logger", "false", "--trainer.accelerator", "cpu",
                 "--trainer.devices", "1", "--trainer.precision", precision,
                 "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"audioclip: error: trainer.precision: {precision} casts the fbsp filter bank to half" in err
    assert "Traceback" not in err


def test_one_process_fp32_step_equals_the_reference_rule_in_a_backward_hook() -> None:
    """Moving the fbsp rule out of the backward hook changes nothing in one fp32 process: the step through the
    Trainer equals, bit for bit, a plain step with the reference's hook (divide by max-abs + 1e-8 in backward)."""
    lightning_step = _one_step("32-true", batchnorm_statistics=True)

    torch.manual_seed(0)
    module = FinetuneModule(model="audioclip-tiny", **sgd(lr=0.1))
    module.train()
    initial = {n: p.detach().clone() for n, p in module.model.named_parameters() if n in FBSP}
    fbsp = module.model.audio.fbsp
    for param in (fbsp.m, fbsp.fb, fbsp.fc):
        param.register_hook(lambda grad: grad / (grad.abs().max() + 1e-8))
    with torch.no_grad():
        text = module.clip_model.encode_text(module.tokens(["dog", "rain"]))
    text = text / text.norm(dim=-1, keepdim=True)
    audio = module.clip_model.embed(_clips(4))["audio"]
    loss = module.clip_model.loss({"audio": audio, "text": text[torch.tensor([0, 1, 0, 1])]})
    optimizer = module.configure_optimizers()["optimizer"]
    loss.backward()
    optimizer.step()
    for name in FBSP:
        param = dict(module.model.named_parameters())[name]
        assert torch.equal(lightning_step[name], param.detach() - initial[name]), name
