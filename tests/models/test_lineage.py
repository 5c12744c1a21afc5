"""Which model a result came from: the variant is read from official tags and from the
lineage checkpoints record, never from a file name; synthetic data is marked; both fine-tuning protocols."""

import pytest
import torch

from audioclip.data import ESC50DataModule
from audioclip.data.provenance import data_kind
from audioclip.data.synthetic import write_esc50
from audioclip.models import create_model
from audioclip.models.lineage import weights_lineage
from audioclip.tasks import FinetuneModule, PartialTrainingModule


def test_official_tags_name_their_variant_and_random_init_is_other():
    assert weights_lineage("esrnxfbsp")["variant"] == "audio-head"
    assert weights_lineage("partial")["variant"] == "partial"
    assert weights_lineage("full")["variant"] == "full"
    assert weights_lineage("clip-rn50")["variant"] == "other"
    assert weights_lineage(None)["variant"] == "other"


def test_a_state_dict_named_like_the_official_partial_weights_is_not_the_partial_variant(tmp_path):
    path = tmp_path / "AudioCLIP-Partial-Training.pt"
    torch.save(create_model("audioclip-tiny").state_dict(), path)
    assert weights_lineage(str(path))["variant"] == "other"


def test_fine_tuning_from_a_partial_training_checkpoint_is_the_partial_variant_whatever_its_name(tmp_path):
    partial = PartialTrainingModule(model="audioclip-tiny", init_from=None)
    checkpoint = {"state_dict": partial.state_dict()}
    partial.on_save_checkpoint(checkpoint)
    path = tmp_path / "full-looking-name.ckpt"  # the name says full; the lineage says partial
    torch.save(checkpoint, path)
    module = FinetuneModule(model="audioclip-tiny", init_from=str(path), num_classes=3)
    assert module.lineage()["variant"] == "partial"
    again = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(again)  # a fine-tuned checkpoint passes its variant on
    torch.save(again, tmp_path / "tuned.ckpt")
    assert weights_lineage(str(tmp_path / "tuned.ckpt"))["variant"] == "partial"


def test_synthetic_trees_are_marked_and_other_trees_count_as_real(tmp_path):
    root = write_esc50(tmp_path / "synthetic", clips_per_class=1, classes=1, progress=False)
    assert data_kind(root) == "synthetic" and data_kind(root / "audio") == "synthetic"
    (tmp_path / "esc50" / "audio").mkdir(parents=True)
    assert data_kind(tmp_path / "esc50") == "real"


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory):
    return write_esc50(tmp_path_factory.mktemp("esc50"), clips_per_class=10, classes=2, progress=False)


def _split(root, protocol):
    dm = ESC50DataModule(root, fold=2, batch_size=2, num_workers=0, progress=False, protocol=protocol,
                         val_fraction=0.25)  # fmt: skip
    dm.setup("fit")
    return set(dm.train_set.ids), set(dm.val_set.ids), set(dm.test_set.ids)


def test_honest_protocol_validates_on_training_folds_and_reference_on_the_test_fold(esc50_root):
    train, val, test = _split(esc50_root, "honest")
    assert val and not val & test and not train & test and len(train | val) == 16
    train, val, test = _split(esc50_root, "reference")
    assert val == test and len(test) == 4  # the released trainer's: the checkpoint is selected on the test fold
    assert len(train) == 16 and not train & test  # every non-test clip trains


def test_an_unknown_protocol_is_a_clear_error(esc50_root):
    with pytest.raises(ValueError, match="protocol must be one of honest, reference, got 'paper'"):
        ESC50DataModule(esc50_root, protocol="paper")
