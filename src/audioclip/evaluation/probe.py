"""Linear probe: a logistic-regression classifier on frozen audio embeddings, fold by fold.

How the field reads an encoder beside zero-shot: CLIP (Radford et al. 2021, sec. 3.2 and appendix A.3) fits an
L-BFGS logistic regression on frozen features with its regularisation swept on held-out training data, and the
audio-text models (LAION-CLAP, Wu et al. 2023; MS-CLAP, Elizalde et al. 2023) and the HEAR benchmark (Turian et al.
2022) score audio embeddings the same way. Here, for each test fold k of the official folds (ESC-50's 5,
UrbanSound8K's 10, a manifest's ``fold`` column):

- the training rows are every other fold; fold k is not looked at until the classifier is fixed;
- features are standardised with the mean and std of the training rows;
- the inverse regularisation strength C is chosen from ``C_GRID`` by cross-validation over the **training folds
  only**, each fold kept whole (leave one training fold out when there are at most ``INNER_SPLITS`` of them, else
  ``INNER_SPLITS`` groups of folds): the C with the best mean accuracy, then refit on all training rows
  (scikit-learn's ``LogisticRegressionCV``, multinomial, L-BFGS);
- accuracy on fold k; the result holds every fold's accuracy and C and their mean ± sample std.

Data without folds (a class-folder tree, a manifest without a ``fold`` column) is split into ``DEFAULT_FOLDS``
seeded, class-stratified folds, and the result says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from audioclip.evaluation.embedded import EmbeddedSet
from audioclip.inference import InputError

C_GRID = tuple(10.0**k for k in range(-3, 5))  # 1e-3 .. 1e4: from a near-constant classifier to almost no penalty
INNER_SPLITS = 5  # cross-validation splits over the training folds (ESC-50: its 4 training folds, one each)
DEFAULT_FOLDS = 5  # folds made for data that has none
MAX_ITER = 1000  # L-BFGS iterations: enough for standardised 1024-d embeddings at the largest C


def probe_folds(data: EmbeddedSet, seed: int = 0) -> tuple[np.ndarray, str]:
    """(the fold of every sample, how the folds were made, in words)."""
    folds = np.array(data.folds)
    if (folds > 0).all():
        count = len(set(folds.tolist()))
        if count < 3:
            raise InputError(f"{data.root}: {count} fold(s); the linear probe needs at least 3 (a test fold and two "
                             "training folds to choose the regularisation on)")  # fmt: skip
        return folds, f"the {count} folds of {data.dataset}"
    if (folds > 0).any():
        raise InputError(f"{data.root}: some samples have a fold and others not; give every row a fold, or none")
    labels = np.array([labels[0] for labels in data.labels])
    splitter = StratifiedKFold(n_splits=DEFAULT_FOLDS, shuffle=True, random_state=seed)
    made = np.zeros(len(labels), dtype=int)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels), start=1):
        made[test] = fold
    return made, f"{DEFAULT_FOLDS} seeded stratified folds (seed {seed}; the data has none)"


def probe_fold(
    features: np.ndarray, labels: np.ndarray, folds: np.ndarray, test_fold: int,
    cs: Sequence[float] = C_GRID, jobs: int | None = None,
) -> dict:  # fmt: skip
    """Fit on every fold but ``test_fold`` (C by cross-validation over those folds) and score ``test_fold``."""
    train, test = folds != test_fold, folds == test_fold
    scaler = StandardScaler().fit(features[train])
    groups = folds[train]
    inner = GroupKFold(n_splits=min(INNER_SPLITS, len(set(groups.tolist()))))
    splits = list(inner.split(features[train], labels[train], groups=groups))
    classifier = LogisticRegressionCV(Cs=list(cs), cv=splits, scoring="accuracy", max_iter=MAX_ITER, n_jobs=jobs)
    classifier.fit(scaler.transform(features[train]), labels[train])
    predicted = classifier.predict(scaler.transform(features[test]))
    cv_accuracy = next(iter(classifier.scores_.values())).mean(0)  # (C,): mean over the inner splits
    return {
        "accuracy": float((predicted == labels[test]).mean()),
        "C": float(classifier.C_[0]),
        "cv_accuracy": float(cv_accuracy.max()),
        "num_train": int(train.sum()),
        "num_test": int(test.sum()),
        "correct": (predicted == labels[test]),
    }


def linear_probe(
    data: EmbeddedSet, test_folds: Sequence[int] | None = None, cs: Sequence[float] = C_GRID,
    jobs: int | None = None, seed: int = 0, progress: bool = True,
) -> dict:  # fmt: skip
    """Linear-probe accuracy of the audio embeddings of ``data`` on each of ``test_folds`` (default: every fold),
    JSON-ready."""
    if data.task != "class":
        raise InputError(f"{data.root}: a {data.task} set; the linear probe needs one class per clip")
    if "audio" not in data.embeddings:
        raise InputError(f"{data.dataset}: no audio embeddings to probe")
    folds, made = probe_folds(data, seed)
    available = sorted(set(folds.tolist()))
    chosen = list(test_folds) if test_folds else available
    missing = [k for k in chosen if k not in available]
    if missing:
        raise InputError(f"{data.root}: fold(s) {missing} not in the data (its folds: {available})")
    features = data.embeddings["audio"].double().numpy()
    labels = np.array([labels[0] for labels in data.labels])
    per_fold = {}
    for fold in tqdm(chosen, desc="Linear probe", unit="fold", disable=not progress):
        per_fold[fold] = probe_fold(features, labels, folds, fold, cs, jobs)
    accuracy = [per_fold[k]["accuracy"] for k in chosen]
    correct = np.concatenate([per_fold[k].pop("correct") for k in chosen])
    return {
        "task": "probe",
        "dataset": data.dataset,
        "root": data.root,
        "num_samples": len(data),
        "class_names": data.class_names,
        "folds_made": made,
        "evaluated_on": f"test fold{'s' if len(chosen) > 1 else ''} {', '.join(map(str, chosen))} of {made}",
        "folds": chosen,
        "classifier": "standardised features, multinomial logistic regression (L-BFGS, scikit-learn)",
        "c_grid": list(cs),
        "c_selection": f"best mean accuracy over {min(INNER_SPLITS, len(available) - 1)} cross-validation splits "
                       "of the training folds, folds kept whole; the test fold is never used",  # fmt: skip
        "fold_accuracy": {k: per_fold[k]["accuracy"] for k in chosen},
        "fold_C": {k: per_fold[k]["C"] for k in chosen},
        "fold_cv_accuracy": {k: per_fold[k]["cv_accuracy"] for k in chosen},
        "fold_sizes": {k: {"train": per_fold[k]["num_train"], "test": per_fold[k]["num_test"]} for k in chosen},
        "fold_mean": statistics.fmean(accuracy),
        "fold_std": statistics.stdev(accuracy) if len(accuracy) > 1 else None,
        "accuracy": float(correct.mean()),  # over every test clip of the chosen folds
    }
