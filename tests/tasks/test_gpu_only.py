"""Checks that only mean something on CUDA: `make test-gpu` runs them, `make test` leaves them out.

- NCCL DDP with SyncBatchNorm: 2 ranks equal 1 rank on the concatenated batch (needs 2 GPUs).
- 16-mixed and bf16-mixed: one step moves the fbsp filter bank as fp32 does (the gradient rule after unscaling).
- ChannelsLast under DDP with warnings as errors (no "grad strides do not match bucket view strides").
- Parity on CUDA: the front end in IEEE fp32 even with TF32 enabled for the rest; the paper model with TF32 off.
- A short run under `torch.cuda.set_sync_debug_mode("warn")`: the project's own code syncs the host only when it
  reads the NaN/Inf flags (`NonFiniteGuard`, every `check_every_n_steps` steps).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from optim_group import sgd
from test_ddp_equals_one_process import WORLD, _assert_grads_close, _one_step, _phase
from torch.utils.data import DataLoader

from audioclip.models import create_model
from audioclip.tasks import ChannelsLast, FinetuneModule
from audioclip.tasks.nonfinite import NonFiniteGuard

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (make test-gpu)")]

FBSP = ("audio.fbsp.m", "audio.fbsp.fb", "audio.fbsp.fc")
SRC = str(Path(__file__).resolve().parents[2] / "src" / "audioclip")


def _clips(n: int, seconds: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return (torch.randn(n, 1, int(44_100 * seconds), generator=g) * 8000).clamp(-32768, 32767)


class _Names(L.LightningDataModule):
    class_names = ["dog", "rain"]

    def __init__(self, n: int = 8) -> None:
        super().__init__()
        self.n = n

    def train_dataloader(self) -> DataLoader:
        audio = _clips(self.n)
        return DataLoader([{"audio": audio[i], "target": i % 2, "id": str(i)} for i in range(self.n)], batch_size=4)


def _trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="gpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


def _fbsp_step(precision: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = FinetuneModule(model="audioclip-tiny", **sgd(lr=0.1))
    module.model.eval()  # running BatchNorm statistics: the comparison is about the step, not fp16 batch statistics
    initial = {n: p.detach().clone() for n, p in module.model.named_parameters() if n in FBSP}
    _trainer(precision=precision, max_steps=1).fit(module, datamodule=_Names(4))
    return {n: p.detach().cpu() - initial[n] for n, p in module.model.named_parameters() if n in FBSP}


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_step_moves_the_filter_bank_as_fp32(precision: str) -> None:
    fp32, mixed = _fbsp_step("32-true"), _fbsp_step(precision)
    for name in FBSP:
        # the same step up to the fp16 rounding of the gradients: the same largest move (the rule's), the same
        # direction; on the loss-scaled gradient the rule would give a step 65536 times too small
        assert mixed[name].abs().max() == pytest.approx(fp32[name].abs().max().item(), rel=1e-2)
        assert torch.nn.functional.cosine_similarity(mixed[name], fp32[name], dim=0) > 0.95


def test_channels_last_under_ddp_copies_no_gradient_bucket() -> None:
    torch.manual_seed(0)
    module = FinetuneModule(model="audioclip-tiny", **sgd(lr=0.01))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*grad strides do not match bucket view strides.*")
        _trainer(strategy="ddp", precision="bf16-mixed", callbacks=[ChannelsLast()], max_steps=2).fit(
            module, datamodule=_Names()
        )


def test_front_end_ignores_tf32_and_the_paper_model_matches_the_golden_file(shared_dir: Path) -> None:
    torch.manual_seed(0)
    model = create_model("esresnext-fbsp-tiny").eval()
    audio = _clips(2)
    cpu = model.double().spectrogram(audio.double()).float()
    torch.set_float32_matmul_precision("high")  # TF32 for everything else
    try:
        cuda = model.float().cuda().spectrogram(audio.cuda()).cpu()
    finally:
        torch.set_float32_matmul_precision("highest")
    assert (cuda - cpu).abs().max() < 0.5  # TF32 in the projection moves low-power bins by up to 5 dB

    sys.path.insert(0, str(shared_dir / "tools"))
    from detweights import fill_state_dict

    golden = np.load(shared_dir / "fixtures" / "parity" / "audioclip_seed0.npz")
    meta = json.loads(str(golden["meta"]))
    clips = [sf.read(shared_dir / "fixtures" / "audio" / c, dtype="int16")[0] for c in meta["clips"]]
    paper = create_model("audioclip")
    paper.load_state_dict(fill_state_dict(paper.state_dict(), 0))
    paper = paper.eval().cuda()
    batch = torch.tensor(np.stack(clips), dtype=torch.float32).unsqueeze(1).cuda()
    with torch.no_grad():
        emb = paper.embed(batch)["audio"].cpu()
    assert (emb - torch.from_numpy(golden["audio_emb"])).abs().max() < 3e-4


def test_training_syncs_the_host_only_to_read_the_flags() -> None:
    torch.manual_seed(0)
    module = FinetuneModule(model="audioclip-tiny", **sgd(lr=0.01))
    guard = NonFiniteGuard(check_every_n_steps=4)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _trainer(max_steps=8, log_every_n_steps=1000, callbacks=[guard]).fit(module, datamodule=_Names(32))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ours = [w for w in caught if "synchroniz" in str(w.message) and w.filename.startswith(SRC)]
    where = {(Path(w.filename).name, w.lineno) for w in ours}
    # 8 steps, flags read every 4 (and at the end of the epoch): a handful of syncs, all in the flag read
    assert len(ours) <= 8, where
    assert all(name == "nonfinite.py" for name, _ in where), where


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs 2 GPUs")
def test_nccl_two_ranks_with_syncbatchnorm_train_as_one(tmp_path: Path) -> None:
    initial = {k: v.detach().clone() for k, v in _phase("FinetuneModule").model.state_dict().items()}
    single = _one_step("FinetuneModule", tmp_path, 1, accelerator="gpu")[0]
    ranks = _one_step("FinetuneModule", tmp_path, WORLD, accelerator="gpu")
    step = {k: single[k].cpu() - initial[k] for k in initial if initial[k].is_floating_point()}
    for rank in ranks:
        _assert_grads_close({k: rank[k].cpu() - initial[k] for k in step}, step)
