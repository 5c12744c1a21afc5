"""Distributed data parallel training gives the same result as one process (issue 4, item 2).

Proven on 2 CPU processes with the gloo backend, against one process that sees the concatenated batch:

1. The contrastive loss (`audioclip.losses`: each rank scores its rows against the batch gathered from every rank
   with gradients, labels offset by the rank) gives the single-process loss and gradients:
   a. plain `torch.distributed` + `DistributedDataParallel`: the mean of the ranks' losses equals the loss over
      the full batch, and every parameter's gradient after DDP's averaging equals the single-process gradient, for
      audio+text and audio+image+text batches;
   b. Lightning (`Trainer(strategy="ddp_spawn", devices=2)`): the parameters after one SGD step equal those of one
      single-process SGD step over the full batch.
   Without the gather each rank would only contrast its own 4 rows, so the loss and gradients would differ.

   This includes the fbsp filter-bank parameters (m, fb, fc), whose gradient LinearFBSP divides by its max-abs in
   a tensor hook: the hook averages the gradient across ranks before normalising (normalising each rank's local
   gradient and then averaging would not be the same), and it is re-registered when ddp_spawn pickles the model.
2. torchmetrics synchronised across the ranks (`MulticlassAccuracy`, `MultilabelAveragePrecision`), each rank
   updated with its share of the data, compute the same values as one process updated with all of it.

Ranks report their results to the test through `torch.save` files in `tmp_path`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision

from audioclip.models import create_model

pytestmark = pytest.mark.ddp

WORLD = 2
BATCH = 8  # global batch; 4 rows per rank
SAMPLES = 44_100  # 1 s of audio keeps a forward/backward of the tiny model well under a second
LR = 0.1  # large enough that one step moves the parameters visibly, so comparing them after the step means something
# The filter-bank parameters whose gradients LinearFBSP normalises in a tensor hook (checked on their own below).
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
    # BatchNorm in train mode normalises with the statistics of the batch it sees, i.e. each rank's half batch,
    # which is a different function from BatchNorm over the full batch (SyncBatchNorm would fix that, but it does
    # not run on CPU). In eval mode BN uses its running statistics, the same everywhere, while every parameter
    # still gets a gradient, so eval mode isolates what is under test: the loss and the gradient averaging.
    # (The tiny model has no dropout, so eval mode changes nothing else.)
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


def _init(rank: int, store: Path) -> None:
    torch.set_num_threads(1)  # two ranks on a 2-core machine
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )


def _spawn(fn, tmp_path: Path, *args) -> list[dict]:
    """Run `fn(rank, store, out, *args)` on WORLD gloo ranks and return what each rank saved to `out`."""
    store = tmp_path / "store"  # FileStore rendezvous: no port to pick, so no race with other tests on the machine
    mp.spawn(fn, args=(store, tmp_path, *args), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


# ---------------------------------------------------------------------------------------------------------------
# 1a. torch.distributed + DistributedDataParallel


def _ddp_loss_worker(rank: int, store: Path, out: Path) -> None:
    _init(rank, store)
    try:
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
            results[case] = {"loss": loss.detach(), "grads": _grads(model)}
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


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
# 1b. Lightning


class _PairedData(Dataset):
    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return BATCH

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return {"index": i, **{k: v[i] for k, v in self.batch.items()}}


class _LitAudioCLIP(L.LightningModule):
    def __init__(self, model: nn.Module, out: Path) -> None:
        super().__init__()
        self.model = model
        self.out = out
        self.seen: list[int] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.model.eval()  # whatever mode Lightning set for training; see _tiny_model for why BN must stay in eval
        self.seen += batch.pop("index").tolist()
        return self.model.loss(self.model.embed(**batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=LR, momentum=0.0)

    def on_train_end(self) -> None:
        params = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        torch.save({"seen": self.seen, "params": params}, self.out / f"rank{self.global_rank}.pt")


def test_lightning_ddp_step_matches_single_process(tmp_path: Path) -> None:
    model = _tiny_model()
    batch = _batch(model)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Lightning replaces the sampler by a DistributedSampler. For training it always makes it a shuffling one
    # (seeded, so the same on both ranks), whatever the DataLoader's `shuffle`: the ranks do not get the even and
    # the odd indices, so they report the indices they saw and the reference batch is built from those.
    loader = DataLoader(_PairedData(batch), batch_size=BATCH // WORLD, shuffle=False)
    trainer = L.Trainer(
        accelerator="cpu",
        # ddp_spawn, not ddp: "ddp" starts rank 1 by re-running the command line, i.e. all of pytest, so each rank
        # runs the whole test with its own tmp_path and neither finds the other's results (tried: it fails).
        # find_unused_parameters: see _ddp_loss_worker.
        strategy="ddp_spawn_find_unused_parameters_true",
        devices=WORLD,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_LitAudioCLIP(model, tmp_path), loader)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    order = torch.tensor([i for r in ranks for i in r["seen"]])
    assert all(len(r["seen"]) == BATCH // WORLD for r in ranks) and sorted(order.tolist()) == list(range(BATCH))

    # The gathered global batch is [rank 0 rows, rank 1 rows]: the reference takes the full batch in that order.
    # The order does not matter anyway, as checked here: permuting the pairs together permutes the rows and the
    # columns of the similarity matrices alike, which leaves the loss (and so the gradients) unchanged.
    reference = _tiny_model()
    with torch.no_grad():
        torch.testing.assert_close(
            reference.loss(reference.embed(**{k: v[order] for k, v in batch.items()})),
            reference.loss(reference.embed(**batch)),
        )
    optimizer = torch.optim.SGD(reference.parameters(), lr=LR, momentum=0.0)
    reference.loss(reference.embed(**{k: v[order] for k, v in batch.items()})).backward()
    optimizer.step()

    # Compare the updates (new - initial = -LR * grad) so the tolerance is relative to the step, not to the weights.
    step = {n: p.detach() - initial[n] for n, p in reference.named_parameters()}
    assert max(s.abs().max().item() for s in step.values() if s.numel()) > 1e-3  # the step is visible
    for r in ranks:
        # DDP keeps the replicas identical...
        for n, p in r["params"].items():
            torch.testing.assert_close(p, ranks[0]["params"][n], rtol=0, atol=0)
        # ...and equal to the single-process step, fbsp included: its gradient hooks survive ddp_spawn's pickling
        _assert_grads_close({n: p - initial[n] for n, p in r["params"].items()}, step)


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
    _init(rank, store)
    try:
        rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, SAMPLES_METRIC)
        torch.save(_update_and_compute(_metric_data(), rows), out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


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
