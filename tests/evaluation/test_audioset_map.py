"""AudioSet mAP against a plain NumPy average precision and a case worked out by hand, including the DDP gather of
torchmetrics."""

from pathlib import Path

import numpy as np
import pytest
import torch
from gloo import gloo_group, spawn

from audioclip.evaluation.metrics import AudioSetMAP, class_scores


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP = mean over the positives of the precision at their rank (scores here have no ties)."""
    order = np.argsort(-scores)
    hits = positives[order].astype(float)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / hits.sum())


def macro_map(scores: np.ndarray, target: np.ndarray) -> float:
    return float(
        np.mean([average_precision(scores[:, c], target[:, c]) for c in range(target.shape[1]) if target[:, c].any()])
    )


def random_case(seed: int, n: int = 64, k: int = 527) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, k, generator=g) < 0.05).int()
    target[0, :] = 1  # every class has a positive
    audio = torch.rand(n, k, generator=g) + 0.3 * target
    image = torch.rand(n, k, generator=g) + 0.1 * target
    return target, audio, image


def hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    """4 clips x 3 classes. Class 0: positives ranked 1st and 3rd, AP = (1/1 + 2/3) / 2 = 5/6. Class 1: its one
    positive ranked 1st, AP = 1. Class 2: no positive clip, no AP. Macro mAP = (5/6 + 1) / 2 = 11/12 = 0.9167
    (counting class 2 as AP 0 would give 0.6111)."""
    target = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    scores = torch.tensor([[0.9, 0.2, 0.5], [0.8, 0.9, 0.4], [0.7, 0.1, 0.3], [0.1, 0.3, 0.2]])
    return target, scores


def test_a_class_without_a_positive_is_left_out_of_the_mean_and_counted() -> None:
    target, scores = hand_case()
    metric = AudioSetMAP(num_classes=3)
    metric.update(target, audio=scores, image=scores.flip(0))
    result = metric.compute()
    assert result["audio"].item() == pytest.approx(11 / 12, abs=1e-6)
    assert metric.classes_left_out == 1
    # image: clip order reversed. Class 0's positives rank 2nd and 4th: (1/2 + 2/4) / 2 = 1/2; class 1's ranks 4th: 1/4
    assert result["image"].item() == pytest.approx((1 / 2 + 1 / 4) / 2, abs=1e-6)


def test_no_positive_at_all_gives_nan_and_every_class_left_out() -> None:
    metric = AudioSetMAP(num_classes=3)
    metric.update(torch.zeros(2, 3, dtype=torch.int), audio=torch.rand(2, 3))
    assert torch.isnan(metric.compute()["audio"]) and metric.classes_left_out == 3


def test_map_matches_numpy_for_audio_image_and_both() -> None:
    target, audio, image = random_case(0)
    metric = AudioSetMAP()
    for rows in torch.split(torch.arange(64), 16):
        metric.update(target[rows], audio=audio[rows], image=image[rows])
    result = metric.compute()
    t = target.numpy()
    assert result["audio"].item() == pytest.approx(macro_map(audio.numpy(), t), abs=1e-5)
    assert result["image"].item() == pytest.approx(macro_map(image.numpy(), t), abs=1e-5)
    assert result["both"].item() == pytest.approx(macro_map((audio + image).numpy() / 2, t), abs=1e-5)
    assert result["audio"] > result["both"] > result["image"]


def test_audio_only_and_bad_shapes() -> None:
    target, audio, _ = random_case(1, n=16)
    metric = AudioSetMAP()
    assert metric.classes_left_out is None  # known only after compute
    metric.update(target, audio=audio)
    assert set(metric.compute()) == {"audio"}
    image_only = AudioSetMAP()
    image_only.update(target, image=audio)
    assert set(image_only.compute()) == {"image"}
    with pytest.raises(ValueError, match=r"^AudioSetMAP: audio scores \(16, 10\) vs target \(16, 527\)$"):
        metric.update(target, audio=audio[:, :10])
    with pytest.raises(ValueError, match=r"^AudioSetMAP: image scores \(16, 10\) vs target \(16, 527\)$"):
        metric.update(target, audio=audio, image=audio[:, :10])
    with pytest.raises(ValueError, match="^AudioSetMAP.update needs audio and/or image class scores$"):
        metric.update(target)
    with pytest.raises(ValueError, match="^AudioSetMAP: target has 527 classes, expected 3$"):
        AudioSetMAP(num_classes=3).update(target, audio=audio)
    both = AudioSetMAP()
    both.update(target, audio=audio, image=audio)
    with pytest.raises(ValueError, match="^AudioSetMAP: image scores were given before; give them for every batch$"):
        both.update(target, audio=audio)


def test_class_scores_are_the_references_sigmoid_of_cosine_minus_half() -> None:
    g = torch.Generator().manual_seed(0)
    embeddings, text = torch.randn(4, 16, generator=g), torch.randn(527, 16, generator=g)
    scale = 100.0  # the reference's logits = scale * a @ t.T, then sigmoid(logits / scale - 0.5)
    a, t = embeddings / embeddings.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    expected = torch.sigmoid(scale * a @ t.T / scale - 0.5)
    assert torch.allclose(class_scores(3 * embeddings, text), expected, atol=1e-6)


def _ddp_worker(rank: int, store: Path, out: str) -> None:
    with gloo_group(rank, 2, store):
        target, audio, image = random_case(2)
        metric = AudioSetMAP()
        metric.update(target[rank::2], audio=audio[rank::2], image=image[rank::2])
        hand = AudioSetMAP(num_classes=3)
        target, scores = hand_case()
        # rank 0 holds clips 0 and 2 (no positive of class 1), rank 1 clips 1 and 3 (no positive of class 0)
        hand.update(target[rank::2], audio=scores[rank::2])
        result = {"random": metric.compute(), "hand": hand.compute()["audio"], "left_out": hand.classes_left_out}
        torch.save(result, Path(out) / f"rank{rank}.pt")


@pytest.mark.ddp
def test_ranks_agree_on_the_map_of_all_their_samples(tmp_path: Path) -> None:
    spawn(_ddp_worker, tmp_path, str(tmp_path))
    target, audio, _ = random_case(2)
    expected = macro_map(audio.numpy(), target.numpy())
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["random"]["audio"].item() == pytest.approx(expected, abs=1e-5)
        assert result["hand"].item() == pytest.approx(11 / 12, abs=1e-6) and result["left_out"] == 1
