"""How a dataset's rows are split into train, validation and test: pure functions of the metadata and a seed.

- `split_folds`: the official protocol of fold-based datasets (ESC-50: Piczak, 2015; UrbanSound8K: Salamon et al.,
  2014): the chosen fold tests, and a class-stratified share of the other folds validates (docs/design.md,
  "Honest protocol").
- `stratified_split`: own data without folds: a seeded, class-stratified share of every class tests and validates.
"""

from __future__ import annotations

import numpy as np


def split_folds(
    folds: np.ndarray, targets: np.ndarray, test_fold: int, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (train, val, test): ``test_fold`` is the test split; a seeded, class-stratified
    ``val_fraction`` of every class in the other folds is the validation split."""
    test = np.flatnonzero(folds == test_fold)
    rest = np.flatnonzero(folds != test_fold)
    rng = np.random.default_rng(seed)
    val = [
        rng.permutation(members)[: round(len(members) * val_fraction)]
        for members in (rest[targets[rest] == target] for target in np.unique(targets[rest]))
    ]
    val = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    return np.setdiff1d(rest, val), val, test


def stratified_split(
    strata: np.ndarray, test_fraction: float, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (train, val, test): per stratum a seeded ``test_fraction`` tests and ``val_fraction`` validates;
    every stratum keeps at least one training row."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        n_test = min(round(len(members) * test_fraction), len(members) - 1)
        n_val = min(round(len(members) * val_fraction), len(members) - 1 - n_test)
        test.append(members[:n_test])
        val.append(members[n_test : n_test + n_val])
        train.append(members[n_test + n_val :])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, val, test))
