"""Cases small enough to check on paper: the expected numbers below are worked out by hand (or with `math` from the
hand-written logits), never by the code under test.

Zero-shot evaluation and `classify` run with stub encoders whose embeddings are known, so the logits are known;
`FinetuneModule` is validated and tested through a real Trainer on batches whose logits are known; the contrastive
loss, the pretraining BCE and the learning-rate schedule are checked against their formulas.
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from optim_group import sgd
from torch.utils.data import DataLoader

import audioclip
from audioclip.evaluation.embedded import EmbeddedSet
from audioclip.evaluation.zeroshot import zeroshot
from audioclip.models import create_model
from audioclip.models.losses import audio_head_loss, contrastive_loss, symmetric_contrastive
from audioclip.tasks import AudioPretrainModule, FinetuneModule

CLASSES = ["dog", "rain", "siren"]
E = torch.eye(3)  # class k's text embedding is the unit vector e_k


def stub_text_encoder(model, names: list[str], vectors: torch.Tensor, template: str = "{}") -> None:
    """`model.encode_text` returns `vectors[k]` for the tokens of `names[k]` in `template` (others: KeyError)."""
    table = {tuple(model.tokenize([name], template)[0].tolist()): vectors[k] for k, name in enumerate(names)}
    model.encode_text = lambda tokens: torch.stack([table[tuple(row.tolist())] for row in tokens])


def softmax(logits: list[float]) -> list[float]:
    exps = [math.exp(x) for x in logits]
    return [x / sum(exps) for x in exps]


def cross_entropy(rows: list[list[float]], labels: list[int]) -> float:
    """Mean over rows of -log softmax(row)[label]."""
    return sum(-math.log(softmax(row)[y]) for row, y in zip(rows, labels, strict=True)) / len(rows)


def away_from_init(audio_head) -> float:
    """Move the fbsp filter bank off its initialisation, where the TTF loss is 0 (so that its sign would not show);
    returns the TTF loss now."""
    with torch.no_grad():
        audio_head.fbsp.fb.mul_(3.0)
        audio_head.fbsp.m.add_(0.5)
    ttf = audio_head.ttf_loss().item()
    assert ttf > 0.05
    return ttf


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("audioclip-tiny").eval()


# ---------------------------------------------------------------- zero-shot evaluation and classify


def test_classify_gives_the_softmax_of_the_known_logits_most_probable_first(tiny, monkeypatch):
    # audio embedding (0.6, 0.8, 0) * 5 (normalised by classify): cosines 0.6, 0.8, 0; logit scale 10
    monkeypatch.setattr(tiny, "encode_audio", lambda audio: torch.tensor([[3.0, 4.0, 0.0]]))
    stub_text_encoder(tiny, CLASSES, 2 * E)
    with torch.no_grad():
        tiny.logit_scale_at.fill_(math.log(10.0))
    probs = audioclip.classify(tiny, torch.zeros(1, 44100), CLASSES, sample_rate=44100)
    expected = softmax([6.0, 8.0, 0.0])  # dog, rain, siren
    assert list(probs) == ["rain", "dog", "siren"]
    assert [probs[name] for name in CLASSES] == pytest.approx(expected, abs=1e-6)
    assert probs["rain"] == pytest.approx(0.8805, abs=1e-4)  # e^8 / (e^6 + e^8 + 1)


def test_classify_clamps_the_logit_scale_to_1_100_and_uses_the_template(tiny, monkeypatch):
    # audio e_0; "dog" e_0, "rain" at cosine 0.995 from it, "siren" orthogonal: logits scale * [1, 0.995, 0]
    monkeypatch.setattr(tiny, "encode_audio", lambda audio: torch.tensor([[1.0, 0.0, 0.0]]))
    stub_text_encoder(tiny, CLASSES, torch.tensor([[1.0, 0, 0], [0.995, math.sqrt(1 - 0.995**2), 0], [0, 0, 1.0]]),
                      template="the sound of {}")  # fmt: skip
    for log_scale, scale in ((math.log(500.0), 100.0), (math.log(0.5), 1.0)):
        with torch.no_grad():
            tiny.logit_scale_at.fill_(log_scale)
        probs = audioclip.classify(tiny, torch.zeros(1, 44100), CLASSES, "the sound of {}", sample_rate=44100)
        expected = softmax([scale, scale * 0.995, 0.0])
        assert [probs[name] for name in CLASSES] == pytest.approx(expected, abs=1e-5), scale
    assert softmax([100.0, 99.5, 0.0])[0] == pytest.approx(0.6225, abs=1e-4)  # 101 would give 0.6230


def test_classify_names_what_is_wrong_with_the_labels(tiny):
    from audioclip.inference import InputError

    with pytest.raises(InputError, match="^no labels given: pass at least one class name$"):
        audioclip.classify(tiny, torch.zeros(1, 44100), [" ", ""], sample_rate=44100)
    with pytest.raises(InputError, match="^duplicate labels: dog, rain$"):
        audioclip.classify(tiny, torch.zeros(1, 44100), ["rain", "dog", "siren", "dog", "rain "], sample_rate=44100)


def test_zeroshot_accuracy_fold_accuracy_and_confusion_from_known_embeddings(tiny):
    stub_text_encoder(tiny, CLASSES, E)
    # six clips, two per class; the last "siren" clip lies closer to "dog" (cos 0.8 vs 0.6): 5 of 6 right
    audio = torch.tensor(
        [[1.0, 0, 0], [0.8, 0.6, 0], [0, 1.0, 0], [0, 0.8, 0.6], [0, 0, 1.0], [0.8, 0, 0.6]]
    )
    data = EmbeddedSet(
        "esc50", "-", CLASSES, [(0,), (0,), (1,), (1,), (2,), (2,)], [1, 2, 1, 2, 1, 2],
        [str(i) for i in range(6)], {"audio": audio},
    )  # fmt: skip
    result = zeroshot(tiny, data, num_folds=5)
    assert result == {
        "task": "zeroshot",
        "dataset": "esc50",
        "root": "-",
        "templates": ["{}"],
        "evaluated_on": "folds 1, 2 of 5 only (6 samples)",
        "folds": [1, 2],
        "num_samples": 6,
        "class_names": CLASSES,
        "modality": "audio",
        "accuracy": pytest.approx(5 / 6),
        "fold_accuracy": {1: 1.0, 2: pytest.approx(2 / 3)},
        "fold_mean": pytest.approx(5 / 6),
        "fold_std": pytest.approx(math.sqrt(2 * (1 / 6) ** 2)),  # sample std of 1 and 2/3
        "per_class_accuracy": [1.0, 1.0, 0.5],
        "class_counts": [2, 2, 2],
        "confusion": [[2, 0, 0], [0, 2, 0], [1, 0, 1]],
    }
    one_fold = EmbeddedSet("esc50", "-", CLASSES, [(0,), (1,)], [3, 3], ["a", "b"], {"audio": audio[[0, 2]]})
    single = zeroshot(tiny, one_fold, num_folds=5)
    assert single["evaluated_on"] == "fold 3 of 5 only (2 samples)"
    assert single["fold_mean"] == 1.0 and single["fold_std"] is None  # no spread from one fold
    assert single["per_class_accuracy"] == [1.0, 1.0, 0.0]  # a class with one clip; one with none
    no_folds = EmbeddedSet("imagefolder", "-", CLASSES, [(0,), (2,)], [0, 0], ["a", "b"], {"image": audio[[0, 4]]})
    unfolded = zeroshot(tiny, no_folds)
    assert unfolded["modality"] == "image" and unfolded["accuracy"] == 1.0
    assert unfolded["fold_accuracy"] == {} and unfolded["fold_mean"] is None and unfolded["fold_std"] is None
    one = zeroshot(tiny, one_fold)
    assert one["evaluated_on"] == "whole set (2 samples)" and one["folds"] == []
    every = EmbeddedSet("esc50", "-", CLASSES, [(0,)] * 5, [1, 2, 3, 4, 5], list("abcde"), {"audio": audio[[0] * 5]})
    assert zeroshot(tiny, every, num_folds=5)["evaluated_on"] == (
        "every fold (all 5 official folds = the whole dataset, 5 samples)"
    )


def test_zeroshot_audioset_map_from_known_embeddings(tiny):
    stub_text_encoder(tiny, CLASSES, E)
    # class 0: cosines [1, 0.7, 0.6, 0], positives clips 0 and 2 (ranks 1, 3): AP = (1 + 2/3) / 2 = 5/6
    # class 1: cosines [0, 0.714, 0.8, 0], its positive clip 1 ranks 2nd: AP = 1/2; class 2: no positive
    audio = _unit([[1.0, 0, 0], [0.7, 0.714, 0], [0.6, 0.8, 0], [0, 0, 1.0]])
    data = EmbeddedSet("audioset", "-", CLASSES, [(0,), (1,), (0,), ()], [0] * 4, list("abcd"), {"audio": audio})
    result = zeroshot(tiny, data)
    assert result["map"] == {"audio": pytest.approx((5 / 6 + 1 / 2) / 2)}
    assert result["map_classes_left_out"] == 1 and result["evaluated_on"] == "whole set (4 samples)"


def test_templates_must_hold_one_placeholder():
    from audioclip.evaluation.zeroshot import check_templates
    from audioclip.inference import InputError

    assert check_templates([]) == ["{}"] and check_templates(["a {}", "{}"]) == ["a {}", "{}"]
    with pytest.raises(InputError, match=r"^template 'a \{\} \{\}' must contain '\{\}' exactly once, where the class"):
        check_templates(["a {} {}"])


def test_text_queries_are_the_label_sets_formatted_into_the_template(tiny):
    from audioclip.evaluation.query import query

    names = ["dog", "dog, rain", "rain", "siren"]  # the unique label sets, sorted, as text
    stub_text_encoder(tiny, names, _unit([[1.0, 0, 0], [1.0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0]]), "a {} sound")
    audio = _unit([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0.5, 0], [0, 0, 1.0]])
    data = EmbeddedSet("audioset", "-", CLASSES, [(0,), (1,), (0, 1), (2,)], [0] * 4, list("abcd"), {"audio": audio})
    row = query(tiny, data, "text", "audio", ["a {} sound"])
    # each label set's text is nearest to its one clip ("dog, rain": cosine 0.949 with clip 2, 0.707 with 0 and 1)
    assert (row["num_queries"], row["num_results"], row["num_queries_with_relevant"]) == (4, 4, 4)
    assert (row["p@1"], row["r@1"], row["map"]) == (1.0, 1.0, 1.0)
    back = query(tiny, data, "audio", "text", ["a {} sound"])
    assert (back["num_queries"], back["num_results"], back["p@1"]) == (4, 4, 1.0)
    # one label set only: every result is relevant to every query
    same = EmbeddedSet("audioset", "-", CLASSES, [(2,)] * 3, [0] * 3, list("abc"), {"audio": audio[:3]})
    everything = query(tiny, same, "audio", "text", ["a {} sound"])
    assert everything["num_queries_with_relevant"] == 3 and everything["pr_curve"]["precision"] == [1.0] * 11


def test_precision_recall_curve_by_hand():
    from audioclip.evaluation.query import precision_recall_curve

    # query 0 ranks relevant, not, relevant, not: precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1; the best
    # precision at recall >= r is 1 up to r = 0.5 and 2/3 above; query 1 has nothing relevant and is left out
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.7, 0.1]])
    relevant = torch.tensor([[True, False, True, False], [False, False, False, False]])
    curve = precision_recall_curve(scores, relevant)
    assert curve["recall"] == pytest.approx([k / 10 for k in range(11)])
    assert curve["precision"] == pytest.approx([1.0] * 6 + [2 / 3] * 5)
    one = precision_recall_curve(scores[:1], torch.tensor([[False, True, False, False]]))
    assert one["precision"] == pytest.approx([0.5] * 11)  # one relevant result, ranked 2nd


# ---------------------------------------------------------------- FinetuneModule on known logits


class KnownBatches(L.LightningDataModule):
    """The 'audio' of a clip is its embedding (the stub audio encoder returns it), so its logits are known."""

    class_names = CLASSES

    def __init__(self, batches: list[dict]) -> None:
        super().__init__()
        self.batches = batches

    def val_dataloader(self):
        return DataLoader(self.batches, batch_size=None)

    test_dataloader = train_dataloader = val_dataloader


def stub_finetune_module() -> FinetuneModule:
    """A tiny FinetuneModule whose audio "embedding" is the clip's first 3 samples, whose class texts are the rows
    of E and whose audio-text scale is 2."""
    torch.manual_seed(0)
    module = FinetuneModule(model="audioclip-tiny", num_classes=3, **sgd())
    module.clip_model.encode_audio = lambda audio: audio[:, 0, :3]
    stub_text_encoder(module.clip_model, CLASSES, E)
    with torch.no_grad():
        module.clip_model.logit_scale_at.fill_(math.log(2.0))
    return module


def test_finetune_validation_and_test_accuracy_and_loss_on_known_logits(tmp_path, monkeypatch):
    import audioclip.tasks.finetune as finetune

    shown = {}  # what the test epoch hands to W&B: the confusion matrix and the example predictions

    def show(loggers, classes, confusion, examples) -> None:
        shown.update(classes=classes, confusion=confusion.tolist(), examples=examples)

    monkeypatch.setattr(finetune, "log_classification_to_wandb", show)
    module = stub_finetune_module()
    # clips 0-2 nearest their own class; clip 3 (a dog) is the unit vector of "rain": 3 of 4 right
    emb = [[1.0, 0, 0], [0, 1.0, 0], [0.6, 0, 0.8], [0, 1.0, 0]]
    target = [0, 1, 2, 0]
    batch = {"audio": torch.tensor(emb)[:, None, :], "target": torch.tensor(target), "id": list("abcd")}
    # then 16 "siren" clips, all right: 19 of 20 right, and W&B shows the first 16 clips only
    sirens = {"audio": torch.tensor([[0.0, 0, 1.0]] * 16)[:, None, :], "target": torch.full((16,), 2),
              "id": [f"s{i}" for i in range(16)]}  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    dm = KnownBatches([batch, sirens])
    val = trainer.validate(module, datamodule=dm, verbose=False)[0]
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert val["val/acc"] == pytest.approx(19 / 20) and test["test/acc"] == pytest.approx(19 / 20)
    logits = [[2.0 * x for x in row] for row in emb]  # scale 2 times the cosines
    siren_loss = -math.log(softmax([0.0, 0.0, 2.0])[2])
    expected_loss = (4 * cross_entropy(logits, target) + 16 * siren_loss) / 20  # the mean over the clips
    assert val["val/loss"] == pytest.approx(expected_loss, abs=1e-5)
    assert shown["classes"] == CLASSES and shown["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 17]]
    examples = shown["examples"]
    assert [e["id"] for e in examples] == list("abcd") + [f"s{i}" for i in range(12)]
    assert [e["target"] for e in examples] == target + [2] * 12
    assert [e["pred"] for e in examples] == [0, 1, 2, 1] + [2] * 12
    assert examples[3]["prob"] == pytest.approx(softmax([0.0, 2.0, 0.0])[1], abs=1e-6)
    assert torch.equal(examples[2]["audio"], batch["audio"][2])


def test_finetune_training_loss_pairs_each_clip_with_its_class_text_row(tmp_path):
    module = stub_finetune_module()
    emb = [[1.0, 0, 0], [0, 0.6, 0.8], [0, 0.8, 0.6]]
    batch = {"audio": torch.tensor(emb)[:, None, :], "target": torch.tensor([0, 2, 1]), "id": list("abc")}
    # the text rows are the class texts of the targets: e_0, e_2, e_1; one audio-text pair, so no n! division
    rows = [[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]
    expected = _pair_by_hand(emb, rows, 2.0) + away_from_init(module.clip_model.audio)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=KnownBatches([batch]))
    logged = trainer.callback_metrics  # what the progress bar and W&B show
    assert logged["train/loss_step"].item() == pytest.approx(expected, abs=1e-5)
    assert logged["train/loss_epoch"].item() == pytest.approx(expected, abs=1e-5)


def test_finetune_logits_are_the_clamped_scale_times_the_cosines():
    torch.manual_seed(0)
    module = FinetuneModule(model="audioclip-tiny", num_classes=3)
    module.clip_model.encode_audio = lambda audio: audio[:, 0, :3]
    module._class_text = E
    audio = torch.tensor([[3.0, 4.0, 0.0]])[:, None, :]  # cosines 0.6, 0.8, 0
    for log_scale, scale in ((math.log(500.0), 100.0), (math.log(0.5), 1.0), (math.log(7.0), 7.0)):
        with torch.no_grad():
            module.clip_model.logit_scale_at.fill_(log_scale)
        assert module._logits(audio)[0].tolist() == pytest.approx([0.6 * scale, 0.8 * scale, 0.0], abs=1e-4)


def test_standalone_finetune_training_loss_is_cross_entropy_plus_ttf():
    torch.manual_seed(0)
    # the audio head fine-tuned on a single-label dataset (paper Tables 1/3 "Audio-Head")
    module = AudioPretrainModule(model="esresnext-fbsp-tiny", num_classes=3, multilabel=False, imagenet_init=False)
    logits = [[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    module.model.forward = lambda audio: audio[:, 0, :]  # the "audio" of a clip is its logits
    batch = {"audio": torch.tensor(logits)[:, None, :], "target": torch.tensor([0, 1]), "id": ["a", "b"]}
    expected = cross_entropy(logits, [0, 1]) + away_from_init(module.model)
    assert module.training_step(batch, 0).item() == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------- the contrastive loss


def test_symmetric_contrastive_2x2_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # S = a b^T = [[1, 0.6], [0, 0.8]]; rows of S score a_i against every b_j, rows of S^T b_i against every a_j
    a_to_b = (-math.log(math.e / (math.e + math.exp(0.6))) - math.log(math.exp(0.8) / (1 + math.exp(0.8)))) / 2
    b_to_a = (-math.log(math.e / (math.e + 1)) - math.log(math.exp(0.8) / (math.exp(0.6) + math.exp(0.8)))) / 2
    assert a_to_b == pytest.approx(0.4421, abs=1e-4) and b_to_a == pytest.approx(0.4557, abs=1e-4)
    assert symmetric_contrastive(a, b, torch.tensor(1.0)).item() == pytest.approx(a_to_b + b_to_a, abs=1e-6)
    # the logit scale multiplies S: at scale 3, S = [[3, 1.8], [0, 2.4]]
    scaled = cross_entropy([[3, 1.8], [0, 2.4]], [0, 1]) + cross_entropy([[3, 0], [1.8, 2.4]], [0, 1])
    assert symmetric_contrastive(a, b, torch.tensor(3.0)).item() == pytest.approx(scaled, abs=1e-6)


def _unit(rows: list[list[float]]) -> torch.Tensor:
    t = torch.tensor(rows)
    return t / t.norm(dim=-1, keepdim=True)


# 3 clips with 4-d embeddings (the batch size differs from the width, so that a mixed-up dimension shows)
AUDIO = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]
IMAGE = [[0.8, 0.6, 0, 0], [0, 1.0, 0, 0], [0.6, 0, 0.8, 0]]
TEXT = [[1.0, 0, 0, 0], [0, 0.8, 0.6, 0], [0, 0.6, 0.8, 0]]
# distinct scales, so that a pair scored with another pair's scale is caught: 2 (a-i), 3 (a-t), 5 (i-t)
SCALES = {"logit_scale_ai": math.log(2.0), "logit_scale_at": math.log(3.0), "logit_scale": math.log(5.0)}


def _pair_by_hand(x: list[list[float]], y: list[list[float]], scale: float) -> float:
    """CE(S, y) + CE(S^T, y) for S_ij = scale * x_i . y_j (rows already unit length)."""
    s = [[scale * sum(p * q for p, q in zip(xi, yj, strict=True)) for yj in y] for xi in x]
    labels = list(range(len(x)))
    return cross_entropy(s, labels) + cross_entropy([list(col) for col in zip(*s, strict=True)], labels)


@pytest.mark.parametrize(
    "present, pairs",
    [
        (("audio", "image"), [("audio", "image", 2.0)]),
        (("audio", "text"), [("audio", "text", 3.0)]),
        (("image", "text"), [("image", "text", 5.0)]),
        (("audio", "image", "text"), [("audio", "image", 2.0), ("audio", "text", 3.0), ("image", "text", 5.0)]),
    ],
)
def test_contrastive_loss_3x3_for_every_modality_subset_divided_by_n_factorial(present, pairs):
    rows = {"audio": AUDIO, "image": IMAGE, "text": TEXT}
    emb = {name: _unit(rows[name]) if name in present else None for name in rows}
    total = sum(_pair_by_hand(rows[x], rows[y], scale) for x, y, scale in pairs)
    expected = total / math.factorial(len(pairs))  # 1 pair: / 1; 3 pairs: / 6
    loss = contrastive_loss(emb, {k: torch.tensor(v) for k, v in SCALES.items()})
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_contrastive_loss_with_one_modality_is_none_and_scales_are_clamped_to_1_100():
    one = {"audio": _unit(AUDIO), "image": None, "text": None}
    assert contrastive_loss(one, {k: torch.tensor(v) for k, v in SCALES.items()}) is None
    # nearly parallel rows (cosines 1/sqrt(2) and 0.7036 apart by 0.0035), so that every scale moves the loss
    audio, text = [[1.0, 0, 0], [0, 1.0, 0]], [[0.7071, 0.7036, 0.0705], [0.7036, 0.7071, 0.0705]]
    pair = {"audio": _unit(audio), "text": _unit(text)}
    text = _unit(text).tolist()
    for log_scale, scale in ((math.log(500.0), 100.0), (math.log(0.1), 1.0), (math.log(40.0), 40.0)):
        loss = contrastive_loss(pair, {"logit_scale_at": torch.tensor(log_scale)})
        assert loss.item() == pytest.approx(_pair_by_hand(audio, text, scale), abs=1e-5), scale
    assert _pair_by_hand(audio, text, 100.0) - _pair_by_hand(audio, text, 101.0) > 1e-3


def test_without_a_process_group_the_gather_is_the_identity_and_the_loss_local():
    import audioclip.models.losses as losses

    x = torch.ones(2, 3)
    assert losses.rank_and_world() == (0, 1) and losses.gather_with_grad(x) is x


def test_under_ddp_a_rank_scores_its_rows_against_the_global_batch_with_offset_labels(monkeypatch):
    # rank 1 of 2 holds clip 1 of the 2x2 example above; the gather puts rank 0's row first
    import audioclip.models.losses as losses

    rank0_row = torch.tensor([[1.0, 0.0, 0.0]])  # rank 0's clip: a_0 = b_0 = e_0
    monkeypatch.setattr(losses, "rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(losses, "gather_with_grad", lambda x: torch.cat([rank0_row, x]))
    a, b = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.6, 0.8, 0.0]])
    # this rank's row of S = [0, 0.8] and of S^T = [0.6, 0.8]; its label is 1 (offset by rank x local batch)
    expected = math.log(1 + math.exp(-0.8)) + math.log(1 + math.exp(-0.2))
    assert losses.symmetric_contrastive(a, b, torch.tensor(1.0)).item() == pytest.approx(expected, abs=1e-6)


def test_two_clips_of_one_class_count_each_others_text_as_a_negative():
    # fine-tuning pairs clip i with its class's text row, so two dog clips bring two identical "dog" rows: each
    # clip's positive is its own row only, the other "dog" row is a negative that scores exactly as high
    audio = [[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]
    text = [[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]
    scale = 10.0
    # audio->text rows: dog clips [10, 10, 0] (label = own row), the rain clip [0, 0, 10]; text->audio alike
    row_dog = -math.log(math.exp(10) / (2 * math.exp(10) + 1))
    row_rain = -math.log(math.exp(10) / (math.exp(10) + 2))
    expected = 2 * (2 * row_dog + row_rain) / 3
    assert expected == pytest.approx(2 * 2 * math.log(2) / 3, abs=1e-3)  # perfect embeddings, yet log 2 per dog row
    loss = symmetric_contrastive(_unit(audio), _unit(text), torch.tensor(scale))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------- the pretraining loss and the schedule


def test_pretraining_bce_is_summed_over_classes_and_averaged_over_clips():
    torch.manual_seed(0)
    module = AudioPretrainModule(model="esresnext-fbsp-tiny", num_classes=3, imagenet_init=False)
    logits = torch.tensor([[0.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])  # 2 clips x 3 classes
    target = torch.tensor([[1, 0, 0], [0, 1, 0]])
    # -log sigmoid(0) = -log(1 - sigmoid(0)) = log 2 (four of them); -log(1 - sigmoid(2)) = log(1 + e^2);
    # -log(1 - sigmoid(-1)) = log(1 + e^-1); summed over the classes, averaged over the 2 clips
    expected = (4 * math.log(2) + math.log(1 + math.e**2) + math.log(1 + math.exp(-1))) / 2
    assert expected == pytest.approx(2.6064, abs=1e-4)
    ttf = away_from_init(module.model)
    assert module._loss(logits, target).item() == pytest.approx(expected + ttf, abs=1e-5)


def test_class_weighted_bce_weights_each_clips_sum_then_averages_over_clips():
    logits = torch.tensor([[0.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])  # 2 clips x 3 classes, as above
    target = torch.tensor([[1, 0, 0], [0, 1, 0]])
    first = 2 * math.log(2) + math.log(1 + math.e**2)  # clip 0's BCE summed over its classes
    second = math.log(1 + math.exp(-1)) + 2 * math.log(2)  # clip 1's
    expected = (2.0 * first + 0.5 * second) / 2  # weights 2 and 0.5, then the mean over the 2 clips
    assert expected == pytest.approx(3.9381, abs=1e-4)
    loss = audio_head_loss(logits, target, multilabel=True, weights=torch.tensor([2.0, 0.5]))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_single_label_pretraining_loss_is_cross_entropy_plus_ttf():
    torch.manual_seed(0)
    module = AudioPretrainModule(model="esresnext-fbsp-tiny", num_classes=3, multilabel=False, imagenet_init=False)
    logits = [[1.0, 0.0, 0.0], [0.0, 3.0, 1.0]]
    expected = cross_entropy(logits, [0, 2]) + away_from_init(module.model)
    assert module._loss(torch.tensor(logits), torch.tensor([0, 2])).item() == pytest.approx(expected, abs=1e-5)


class _LRSeen(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_learning_rate_after_k_epochs_is_lr_times_gamma_to_the_k_through_the_trainer(tmp_path):
    torch.manual_seed(0)
    module = AudioPretrainModule(
        model="esresnext-fbsp-tiny", num_classes=2, imagenet_init=False, **sgd(lr=0.1, gamma=0.5)
    )
    batch = {"audio": torch.randn(2, 1, 4410) * 1000, "target": torch.tensor([[1, 0], [0, 1]])}
    seen = _LRSeen()
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[seen], default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))
    assert seen.lrs == pytest.approx([0.1, 0.05, 0.025])
    assert all(g["lr"] == pytest.approx(0.1 * 0.5**3) for g in trainer.optimizers[0].param_groups)
