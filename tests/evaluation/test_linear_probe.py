"""The linear probe (`audioclip evaluate probe`): near 100% on separable classes and near chance on shuffled labels,
the regularisation chosen on the training folds only, folds made for data without any, and the frozen embeddings
computed once per checkpoint and data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import audioclip
from audioclip.cli import main
from audioclip.data.synthetic import write_esc50
from audioclip.evaluation import probe as probe_module
from audioclip.evaluation.embedded import EmbeddedSet
from audioclip.evaluation.probe import linear_probe
from audioclip.evaluation.report import evaluation_measures, latest_results, report_rows
from audioclip.inference import InputError

FAST_GRID = (0.01, 1.0, 100.0)  # three strengths keep the fits quick; the default grid has eight


def synthetic_set(labels: np.ndarray, folds: np.ndarray, dim: int = 64, seed: int = 0) -> EmbeddedSet:
    """Embeddings around one well-separated mean per class of ``labels`` (the first 4 rows' classes 0..3)."""
    rng = np.random.default_rng(seed)
    classes = 4
    means = rng.normal(size=(classes, dim)) * 3
    true = np.repeat(np.arange(classes), len(labels) // classes)
    features = torch.tensor(means[true] + rng.normal(size=(len(labels), dim)), dtype=torch.float32)
    return EmbeddedSet("esc50", "synthetic", [f"c{k}" for k in range(classes)], [(int(x),) for x in labels],
                       folds.tolist(), [str(i) for i in range(len(labels))], {"audio": features})  # fmt: skip


# 4 classes x 5 folds x 6 clips; clip i is in fold i % 5 + 1 (interleaved, as ESC-50's synthetic layout), so a split
# of consecutive rows is not a split of whole folds
LABELS = np.repeat(np.arange(4), 30)
FOLDS = np.arange(120) % 5 + 1


def test_separable_classes_are_probed_near_perfectly_on_every_fold():
    result = linear_probe(synthetic_set(LABELS, FOLDS), cs=FAST_GRID, progress=False)
    assert set(result["fold_accuracy"]) == {1, 2, 3, 4, 5}
    assert min(result["fold_accuracy"].values()) >= 0.95 and result["accuracy"] >= 0.95
    assert result["fold_sizes"][3] == {"train": 96, "test": 24}


@pytest.mark.parametrize("seed", [0, 1])
def test_shuffled_labels_are_probed_near_chance(seed):
    shuffled = np.random.default_rng(seed).permutation(LABELS)  # the features no longer tell the labels
    result = linear_probe(synthetic_set(shuffled, FOLDS), cs=FAST_GRID, progress=False)
    assert result["fold_mean"] < 0.45  # chance is 0.25; memorising the test fold would score near 1
    per_fold = list(result["fold_accuracy"].values())
    assert result["fold_mean"] == pytest.approx(np.mean(per_fold))
    assert result["fold_std"] == pytest.approx(np.std(per_fold, ddof=1)) and result["fold_std"] > 0  # sample std


def test_the_regularisation_is_chosen_on_whole_training_folds_and_never_sees_the_test_fold(monkeypatch):
    seen = []

    class Recording(probe_module.LogisticRegressionCV):
        def fit(self, x, y, **kwargs):
            seen.append((len(x), [(set(t), set(v)) for t, v in self.cv]))
            return super().fit(x, y, **kwargs)

    monkeypatch.setattr(probe_module, "LogisticRegressionCV", Recording)
    linear_probe(synthetic_set(LABELS, FOLDS), test_folds=[2], cs=FAST_GRID, progress=False)
    ((rows, splits),) = seen
    assert rows == 96  # the 4 training folds only; fold 2's 24 clips are not among them
    train_folds = FOLDS[FOLDS != 2]
    assert len(splits) == 4  # one split per training fold: leave one training fold out
    for fit_rows, held_out in splits:
        fit_folds, held_folds = set(train_folds[list(fit_rows)]), set(train_folds[list(held_out)])
        assert len(held_folds) == 1 and not fit_folds & held_folds  # whole folds held out


def test_data_without_folds_gets_seeded_stratified_folds_and_bad_folds_are_refused():
    result = linear_probe(synthetic_set(LABELS, np.zeros(120, dtype=int)), cs=FAST_GRID, progress=False)
    assert result["folds"] == [1, 2, 3, 4, 5] and "5 seeded stratified folds (seed 0" in result["evaluated_on"]
    assert all(size["test"] == 24 for size in result["fold_sizes"].values())  # 6 clips of each class per fold
    with pytest.raises(InputError, match="2 fold\\(s\\); the linear probe needs at least 3"):
        linear_probe(synthetic_set(LABELS, FOLDS % 2 + 1), progress=False)
    mixed = FOLDS.copy()
    mixed[0] = 0
    with pytest.raises(InputError, match="some samples have a fold and others not"):
        linear_probe(synthetic_set(LABELS, mixed), progress=False)
    with pytest.raises(InputError, match=r"fold\(s\) \[7\] not in the data"):
        linear_probe(synthetic_set(LABELS, FOLDS), test_folds=[7], progress=False)
    captions = synthetic_set(LABELS, FOLDS)
    captions.task = "caption"
    with pytest.raises(InputError, match="a caption set; the linear probe needs one class per clip"):
        linear_probe(captions, progress=False)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_probe_command_caches_embeddings_per_checkpoint_and_data_and_reports(tmp_path, capsys):
    esc50 = write_esc50(tmp_path / "esc50", clips_per_class=5, classes=3, progress=False)
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        checkpoints.append(tmp_path / f"tiny{seed}.pt")
        torch.save(audioclip.create_model("audioclip-tiny").state_dict(), checkpoints[-1])
    runs = tmp_path / "runs"

    def probe(checkpoint, *extra):
        return run(capsys, "evaluate", "probe", "--dataset", "esc50", "--root", esc50, "--checkpoint", checkpoint,
                   "--out", runs / "eval", *extra)  # fmt: skip

    code, out, _ = probe(checkpoints[0])
    assert code == 0 and "Embeddings cached in" in out and "mean ± std over folds" in out
    result = json.loads((runs / "eval/probe-esc50/results.json").read_text())
    assert set(result["fold_accuracy"]) == {"1", "2", "3", "4", "5"} and result["num_samples"] == 15
    assert result["data"] == "synthetic" and result["fingerprint"] and 0 <= result["fold_mean"] <= 1

    code, out, _ = probe(checkpoints[0], "--fold", 2, "--name", "again")
    assert code == 0 and "Embeddings read from" in out and "Embedding esc50" not in out
    assert json.loads((runs / "eval/again/results.json").read_text())["folds"] == [2]
    code, out, _ = probe(checkpoints[1], "--fold", 2, "--name", "other-weights")
    assert code == 0 and "Embeddings cached in" in out  # other weights: their own embeddings
    clip = next((esc50 / "audio").glob("*.wav"))
    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 10**9))
    code, out, _ = probe(checkpoints[0], "--fold", 2, "--name", "touched")
    assert code == 0 and "Embeddings cached in" in out  # a changed clip: embedded again
    assert len(list((runs / "eval/embeddings").glob("esc50-*.pt"))) == 3

    rows = [r for r in report_rows(evaluation_measures(latest_results(runs))) if r["metric"] == "linear-probe accuracy"]
    assert rows and all(r["table"] is None and not r["comparable"] for r in rows)  # synthetic data, no paper figure

    code, _, err = run(capsys, "evaluate", "probe", "--dataset", "audioset", "--checkpoint", checkpoints[0])
    assert code == 2 and "--dataset audioset: the linear probe runs on esc50, us8k, folder" in err
