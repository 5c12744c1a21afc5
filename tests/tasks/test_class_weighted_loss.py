"""`AudioPretrainModule(class_weighted_loss=True)`: each clip's BCE weighted by the sum of its classes' weights
(the reference trainer's AudioSet loss weighting), computed by hand on a 2-clip, 3-class batch."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from audioclip.data.audioset import AudioSetDataModule
from audioclip.tasks import AudioPretrainModule


def _module(weighted: bool) -> AudioPretrainModule:
    torch.manual_seed(0)
    module = AudioPretrainModule(
        model="esresnext-fbsp-tiny", num_classes=3, imagenet_init=False, class_weighted_loss=weighted
    )
    # the datamodule's rule (sum of the clip's class weights) over fixed class weights
    data = SimpleNamespace(
        class_weights=lambda: torch.tensor([0.5, 2.0, 0.5]),
        sample_weights=lambda target, weights: AudioSetDataModule.sample_weights(None, target, weights),
    )
    module._trainer = SimpleNamespace(datamodule=data)
    return module


def test_each_clip_is_weighted_by_the_sum_of_its_class_weights() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]])
    target = torch.tensor([[1, 1, 0], [0, 0, 1]])
    module = _module(weighted=True)
    weights = module._sample_weights(target)
    assert weights.tolist() == [2.5, 0.5]  # 0.5 + 2.0, and 0.5
    per_clip = [F.binary_cross_entropy_with_logits(logits[i], target[i].float(), reduction="sum") for i in (0, 1)]
    expected = (2.5 * per_clip[0] + 0.5 * per_clip[1]) / 2 + module.model.ttf_loss()
    torch.testing.assert_close(module._loss(logits, target, weights), expected)
    # off (the default): the reference's plain BCE, summed over classes and averaged over the batch
    plain = _module(weighted=False)
    assert plain._sample_weights(target) is None
    torch.testing.assert_close(plain._loss(logits, target), (per_clip[0] + per_clip[1]) / 2 + plain.model.ttf_loss())


def test_class_weighting_needs_the_multilabel_loss() -> None:
    with pytest.raises(ValueError, match="class_weighted_loss"):
        AudioPretrainModule(model="esresnext-fbsp-tiny", num_classes=3, multilabel=False, class_weighted_loss=True)
