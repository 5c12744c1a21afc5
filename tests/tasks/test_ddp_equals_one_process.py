"""Distributed data parallel training gives the same result as one process.

Proven on 2 CPU processes with the gloo backend, against one process that sees the concatenated batch:

1. The contrastive loss (`audioclip.models.losses`: each rank scores its rows against the batch gathered from every rank
   with gradients, labels offset by the rank) gives the single-process loss and gradients:
   a. plain `torch.distributed` + `DistributedDataParallel`: the mean of the ranks' losses equals the loss over
      the full batch, and every parameter's gradient after DDP's averaging equals the single-process gradient, for
      audio+text and audio+image+text batches;
   b. Lightning, through the project's own `FinetuneModule` and `FullTrainingModule` (tiny) with BatchNorm in
      train mode: the weights and BatchNorm statistics after one SGD step on 2 ranks x 4 clips equal those after one
      step on 1 rank x 8 clips. This needs global-batch BatchNorm (`audioclip.tasks.distributed`).
   Without the gather each rank would only contrast its own 4 rows, so the loss and gradients would differ.

   This includes the fbsp filter-bank parameters (m, fb, fc), whose gradient is divided by its max-abs after DDP
   has averaged it (`LinearFBSP.normalize_grad_`; normalising each rank's local gradient and then averaging would
   not be the same).
2. torchmetrics synchronised across the ranks (`MulticlassAccuracy`, `MultilabelAveragePrecision`), each rank
   updated with its share of the data, compute the same values as one process updated with all of it.

Ranks report their results to the test through `torch.save` files in `tmp_path`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from gloo import gloo_group, spawn
from optim_group import sgd
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision

from audioclip.models import create_model
from audioclip.models.fbsp import normalize_fbsp_grads_
from audioclip.tasks import FinetuneModule, FullTrainingModule
from audioclip.tasks.distributed import SyncBatchNormPlugin

pytestmark = pytest.mark.ddp

WORLD = 2
BATCH = 8  # global batch; 4 rows per rank
SAMPLES = 44_100  # 1 s of audio keeps a forward/backward of the tiny model well under a second
LR = 0.1  # large enough that one step moves the parameters visibly, so comparing them after the step means something
# The filter-bank parameters whose gradients LinearFBSP normalises (checked on their own below).
FBSP_NORMALISED = ("audio.fbsp.m", "audio.fbsp.fb", "audio.fbsp.fc")
CASES: dict[str, tuple[str, ...]] = {
    "audio_text": ("audio", "text"),
    "audio_image_text": ("audio", "image", "text"),
}


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers. Every process builds the same model and batch from fixed seeds, so nothing big has to be sent
# to the ranks.


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("audioclip-tiny")
    # Eval mode isolates what 1a tests, the loss and the gradient averaging: BatchNorm uses its running statistics,
    # the same everywhere, while every parameter still gets a gradient. Train-mode BatchNorm over the global batch
    # is tested in 1b. (The tiny model has no dropout, so eval mode changes nothing else.)
    return model.eval()


def _batch(model: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    audio = (torch.randn(BATCH, 1, SAMPLES, generator=g) * 3000).clamp(-32768, 32767)  # int16 value range
    image = torch.randn(BATCH, 3, 224, 224, generator=g)
    words = ["dog", "rain", "siren", "piano", "engine", "bird", "door", "cough"]
    return {"audio": audio, "image": image, "text": model.tokenize([f"the sound of a {w}" for w in words])}


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    # Parameters that take no part in the loss (the visual tower without images, fbsp's unused `bias`) have no
    # gradient; count it as zero on both sides.
    return {
        n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone() for n, p in model.named_parameters()
    }


def _assert_grads_close(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], skip: tuple[str, ...] = ()
) -> None:
    scale = max(g.abs().max().item() for g in expected.values() if g.numel())
    assert scale > 0, "no gradient at all: the comparison would prove nothing"
    for name, ref in expected.items():
        if name in skip or not ref.numel():
            continue
        # The ranks sum the same terms in another order, so compare relative to each tensor's gradient scale
        # (observed: < 1e-5 of it), with a floor for tensors whose gradient is (close to) zero.
        atol = 5e-5 * ref.abs().max().item() + 1e-7 * scale
        torch.testing.assert_close(actual[name], ref, rtol=1e-4, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def _spawn(fn, tmp_path: Path, *args) -> list[dict]:
    """Run `fn(rank, store, out, *args)` on WORLD gloo ranks and return what each rank saved to `out`."""
    spawn(fn, tmp_path, tmp_path, *args, nprocs=WORLD)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


# ---------------------------------------------------------------------------------------------------------------
# 1a. torch.distributed + DistributedDataParallel


def _ddp_loss_worker(rank: int, store: Path, out: Path) -> None:
    with gloo_group(rank, WORLD, store):
        model = _tiny_model()
        # find_unused_parameters: fbsp's empty `bias` is never used (kept for the reference's checkpoints), nor is
        # the visual tower without images; without it DDP waits for their gradients and fails at the next
        # iteration with "Expected to have finished reduction in the prior iteration".
        ddp = DistributedDataParallel(model, find_unused_parameters=True)
        rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        local = {k: v[rows] for k, v in _batch(model).items()}
        results = {}
        for case, modalities in CASES.items():
            ddp.zero_grad(set_to_none=True)
            # Through DDP's forward (AudioCLIP.forward returns model.loss(model.embed(...)) last) so that DDP
            # prepares the gradient all-reduce for the backward.
            _, _, loss = ddp(**{m: local[m] for m in modalities})
            loss.backward()
            normalize_fbsp_grads_(model)  # after DDP's averaging, as the phases do before the optimizer step
            results[case] = {"loss": loss.detach(), "grads": _grads(model)}
        torch.save(results, out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """One 2-rank DDP run and the single-process reference, per case: {"ranks": [...], "loss": ..., "grads": ...}."""
    ranks = _spawn(_ddp_loss_worker, tmp_path_factory.mktemp("ddp"))
    model = _tiny_model()
    batch = _batch(model)
    results = {}
    for case, modalities in CASES.items():
        model.zero_grad(set_to_none=True)
        loss = model.loss(model.embed(**{m: batch[m] for m in modalities}))
        loss.backward()
        normalize_fbsp_grads_(model)
        results[case] = {"ranks": [r[case] for r in ranks], "loss": loss.detach(), "grads": _grads(model)}
    return results


@pytest.mark.parametrize("case", CASES)
def test_ddp_loss_matches_single_process(ddp_run: dict[str, dict], case: str) -> None:
    run = ddp_run[case]
    # Each rank's loss is the mean over its own rows (its share of the global loss); the global loss is the mean
    # over all rows, i.e. the mean of the ranks' losses (equal shares). Without the gather each rank's loss would
    # be a 4-way instead of an 8-way classification, and this fails.
    mean_loss = torch.stack([r["loss"] for r in run["ranks"]]).mean()
    torch.testing.assert_close(mean_loss, run["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_ddp_gradients_match_single_process(ddp_run: dict[str, dict], case: str) -> None:
    run = ddp_run[case]
    for r in run["ranks"]:
        _assert_grads_close(r["grads"], run["grads"], skip=FBSP_NORMALISED)


@pytest.mark.parametrize("case", CASES)
def test_ddp_fbsp_normalised_gradients_match_single_process(ddp_run: dict[str, dict], case: str) -> None:
    run = ddp_run[case]
    fbsp = {n: run["grads"][n] for n in FBSP_NORMALISED}
    for r in run["ranks"]:
        _assert_grads_close(r["grads"], fbsp)


# ---------------------------------------------------------------------------------------------------------------
# 1b. Lightning, through the project's own LightningModules, BatchNorm in train mode


class _Clips(Dataset):
    def __init__(self, with_image: bool) -> None:
        g = torch.Generator().manual_seed(3)
        self.audio = (torch.randn(BATCH, 1, SAMPLES, generator=g) * 3000).clamp(-32768, 32767)
        self.image = torch.randn(BATCH, 3, 224, 224, generator=g) if with_image else None
        self.target = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])

    def __len__(self) -> int:
        return BATCH

    def __getitem__(self, i: int) -> dict:
        item = {"audio": self.audio[i], "target": self.target[i], "id": f"clip{i}"}
        item["text"] = _Batches.class_names[int(self.target[i])]
        if self.image is not None:
            item["image"] = self.image[i]
        return item


class _Batches(L.LightningDataModule):
    """8 fixed clips: rank r of R takes clips r, r + R, ... (a DistributedSampler, so Lightning keeps it), in
    batches of 8 / R; one process takes all 8 in one batch. The global batch is the same set of clips."""

    class_names = ["dog", "rain", "siren", "piano"]

    def __init__(self, with_image: bool) -> None:
        super().__init__()
        self.with_image = with_image

    def train_dataloader(self) -> DataLoader:
        data = _Clips(self.with_image)
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(data, batch_size=BATCH // world, sampler=sampler)


class _SaveState(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        torch.save(state, self.out / f"state{trainer.world_size}-rank{trainer.global_rank}.pt")


def _phase(name: str) -> L.LightningModule:
    torch.manual_seed(0)
    if name == "FinetuneModule":
        return FinetuneModule(model="audioclip-tiny", **sgd(lr=LR))
    return FullTrainingModule(model="audioclip-tiny", **sgd(lr=LR))


def _one_step(name: str, out: Path, world: int, accelerator: str = "cpu") -> list[dict[str, torch.Tensor]]:
    trainer = L.Trainer(
        accelerator=accelerator,
        # ddp_spawn, not ddp: "ddp" starts rank 1 by re-running the command line, i.e. all of pytest (the users'
        # commands are run under "ddp" in tests/tasks/test_multigpu_commands.py). No find_unused_parameters: every
        # trainable parameter of the phases takes part in their loss.
        strategy="ddp_spawn" if world > 1 else "auto",
        devices=world,
        plugins=[SyncBatchNormPlugin("cuda" if accelerator == "gpu" else "cpu")] if world > 1 else None,
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out / f"world{world}",
        callbacks=[_SaveState(out)],
    )
    trainer.fit(_phase(name), datamodule=_Batches(with_image=name == "FullTrainingModule"))
    return [torch.load(out / f"state{world}-rank{r}.pt", map_location="cpu") for r in range(world)]


@pytest.mark.parametrize("name", ["FinetuneModule", "FullTrainingModule"])
def test_two_ranks_train_as_one_rank_on_the_concatenated_batch(name: str, tmp_path: Path) -> None:
    """One SGD step of a phase on 2 ranks x 4 clips equals one step on 1 rank x 8 clips: weights (so the loss's
    gradients, the fbsp rule included) and BatchNorm running statistics, with BatchNorm in train mode (global-batch
    BatchNorm; plain BatchNorm normalises each half batch on its own and fails this)."""
    initial = {k: v.detach().clone() for k, v in _phase(name).model.state_dict().items()}
    single = _one_step(name, tmp_path, 1)[0]
    ranks = _one_step(name, tmp_path, WORLD)
    step = {k: single[k] - initial[k] for k in initial if initial[k].is_floating_point() and initial[k].numel()}
    assert max(v.abs().max().item() for v in step.values() if v.numel()) > 1e-3  # the step is visible
    moved_stats = [k for k in step if k.endswith("running_mean") and step[k].abs().max() > 0]
    assert moved_stats, "no BatchNorm in train mode: the comparison would not cover it"
    scale = max(v.abs().max().item() for v in step.values() if v.numel())
    for rank in ranks:
        for k, v in rank.items():
            torch.testing.assert_close(v, ranks[0][k], rtol=0, atol=0)  # DDP keeps the replicas identical
        for k, ref in step.items():
            # relative to each tensor's step; the floor covers steps that are zero up to rounding (a convolution's
            # bias before BatchNorm has no gradient: observed ~4e-6 of rounding, against steps of ~1e-1 here;
            # per-rank BatchNorm statistics move the weights by the order of the step itself)
            atol = 1e-3 * ref.abs().max().item() + 1e-4 * scale
            torch.testing.assert_close(rank[k] - initial[k], ref, rtol=1e-3, atol=atol, msg=lambda m, n=k: f"{n}: {m}")


# ---------------------------------------------------------------------------------------------------------------
# 2. Metrics synchronised across ranks

CLASSES = 5
LABELS = 4
SAMPLES_METRIC = 40
SPLIT = 23  # rank 0 gets the first 23 samples, rank 1 the other 17: uneven, so states of unequal size are gathered


def _metric_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {
        "class_logits": torch.randn(SAMPLES_METRIC, CLASSES, generator=g),
        "class_target": torch.randint(0, CLASSES, (SAMPLES_METRIC,), generator=g),
        "label_scores": torch.rand(SAMPLES_METRIC, LABELS, generator=g),
        "label_target": torch.randint(0, 2, (SAMPLES_METRIC, LABELS), generator=g),
    }


def _metrics() -> dict[str, Metric]:
    return {
        "accuracy_micro": MulticlassAccuracy(CLASSES, average="micro"),
        "accuracy_macro": MulticlassAccuracy(CLASSES, average="macro"),
        "map": MultilabelAveragePrecision(LABELS, average="macro", thresholds=None),
    }


def _update_and_compute(data: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    metrics = _metrics()
    for name, metric in metrics.items():
        # Two updates per rank, as over batches of an epoch.
        for part in (slice(rows.start, rows.start + 5), slice(rows.start + 5, rows.stop)):
            if name.startswith("accuracy"):
                metric.update(data["class_logits"][part], data["class_target"][part])
            else:
                metric.update(data["label_scores"][part], data["label_target"][part])
    # compute() syncs the states of every rank first when torch.distributed is initialised.
    return {name: metric.compute() for name, metric in metrics.items()}


def _metric_worker(rank: int, store: Path, out: Path) -> None:
    with gloo_group(rank, WORLD, store):
        rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, SAMPLES_METRIC)
        torch.save(_update_and_compute(_metric_data(), rows), out / f"rank{rank}.pt")


def test_synced_metrics_match_single_process(tmp_path: Path) -> None:
    ranks = _spawn(_metric_worker, tmp_path)
    data = _metric_data()
    expected = _update_and_compute(data, slice(0, SAMPLES_METRIC))
    # Rank 0's share alone gives other values, so the equality below really needs the sync.
    unsynced = _update_and_compute(data, slice(0, SPLIT))
    assert all(unsynced[name] != value for name, value in expected.items())
    for r in ranks:
        for name, value in expected.items():
            torch.testing.assert_close(r[name], value, msg=lambda m, n=name: f"{n}: {m}")
