"""The paper's optimiser as the phase configs set it (conf/optim/sgd.yaml), for tests that build a phase in Python."""

from pathlib import Path

from audioclip.tasks.base import optimizer_group

SGD_GROUP = Path(__file__).resolve().parents[1] / "conf" / "optim" / "sgd.yaml"


def sgd(**overrides) -> dict:
    """`optimizer=` and `scheduler=` of conf/optim/sgd.yaml, with `lr=` / `gamma=` overrides."""
    return optimizer_group(SGD_GROUP, **overrides)
