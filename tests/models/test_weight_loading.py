"""Loading weights: official-file layouts, key prefixes, strictness, checksums, unsafe pickles."""

import os
import pickle

import pytest
import torch
from clip.model import CLIP

from audioclip.models import WeightsError, create_model, load_weights
from audioclip.models.pretrained import TAGS, read_state_dict


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("audioclip-tiny").eval()


def _same(a, b):
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_state_dict_with_ddp_prefix_and_lightning_checkpoint_load(tiny, tmp_path):
    torch.save({f"module.{k}": v for k, v in tiny.state_dict().items()}, tmp_path / "ddp.pt")
    torch.save({"state_dict": {f"model.{k}": v for k, v in tiny.state_dict().items()}, "epoch": 3}, tmp_path / "l.ckpt")
    for name in ("ddp.pt", "l.ckpt"):
        assert _same(create_model("audioclip-tiny", pretrained=tmp_path / name), tiny)


def test_missing_and_unexpected_keys_are_listed(tiny, tmp_path):
    state = dict(tiny.state_dict())
    del state["audio.fc.weight"]
    state["audio.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(
        WeightsError, match=r"missing keys \(1\): audio\.fc\.weight.*unexpected keys \(1\): audio\.extra"
    ):
        create_model("audioclip-tiny", pretrained=tmp_path / "bad.pt")


def test_weights_of_another_size_are_refused_with_shapes(tmp_path):
    torch.save(create_model("esresnext-fbsp-tiny").state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(WeightsError, match=r"shape mismatch \(\d+\): att1"):
        create_model("esresnext-fbsp", pretrained=tmp_path / "tiny.pt")


def test_torchscript_clip_file_initialises_image_and_text_heads_only(tiny, tmp_path):
    """OpenAI's RN50.pt is a TorchScript archive of CLIP; it fills CLIP's part of a fresh AudioCLIP."""
    cfg = tiny.config
    torch.manual_seed(1)
    clip_model = CLIP(
        cfg.embed_dim,
        cfg.image_resolution,
        cfg.vision_layers,
        cfg.vision_width,
        None,
        cfg.context_length,
        cfg.vocab_size,
        cfg.transformer_width,
        cfg.transformer_heads,
        cfg.transformer_layers,
    ).eval()
    image = torch.randn(1, 3, cfg.image_resolution, cfg.image_resolution)
    traced = torch.jit.trace_module(clip_model, {"encode_image": image})
    traced.save(str(tmp_path / "RN50-tiny.pt"))

    model = create_model("audioclip-tiny")
    audio_before = {k: v.clone() for k, v in model.audio.state_dict().items()}
    load_weights(model, tmp_path / "RN50-tiny.pt")
    for key, value in clip_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert all(torch.equal(model.audio.state_dict()[k], v) for k, v in audio_before.items())


def test_standalone_audio_weights_fill_audioclip_audio_head_except_classifier(tmp_path):
    torch.manual_seed(2)
    esrn = create_model("esresnext-fbsp-tiny")
    torch.save(esrn.state_dict(), tmp_path / "ESRNXFBSP-tiny.pt")
    model = create_model("audioclip-tiny")
    fc_before = model.audio.fc.weight.clone()
    load_weights(model, tmp_path / "ESRNXFBSP-tiny.pt")
    assert torch.equal(model.audio.layer1[0].conv1.weight, esrn.layer1[0].conv1.weight)
    assert torch.equal(model.audio.fbsp.fc, esrn.fbsp.fc)
    assert torch.equal(model.audio.fc.weight, fc_before)  # 527-way classifier -> fresh 64-d projection


def test_file_named_like_an_official_one_with_wrong_checksum_is_refused(tiny, tmp_path):
    path = tmp_path / TAGS["full"].filename
    torch.save(tiny.state_dict(), path)
    with pytest.raises(WeightsError, match=f"does not match.*expected {TAGS['full'].sha256}"):
        create_model("audioclip-tiny", pretrained=path)


def test_missing_official_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIOCLIP_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="make weights"):
        create_model("audioclip", pretrained="full")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EXPLOIT_MARKER']}",))


def test_pickle_that_executes_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"conv1.weight": _Exploit()}, fh)
    with pytest.raises(WeightsError, match="refused as unsafe"):
        read_state_dict(path)
    assert not marker.exists()


def _count_torch_loads(monkeypatch) -> list:
    calls, real = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: calls.append(args[0]) or real(*args, **kwargs))
    return calls


def test_audioclip_load_and_init_from_read_the_file_once(tiny, tmp_path, monkeypatch):
    import audioclip
    from audioclip.tasks import AudioCLIPTask

    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    calls = _count_torch_loads(monkeypatch)
    loaded = audioclip.load(path)  # the architecture is guessed from the same read
    assert len(calls) == 1 and loaded.model_name == "audioclip-tiny" and _same(loaded, tiny)
    assert loaded.lineage["variant"] == "other"
    calls.clear()
    task = AudioCLIPTask(model="audioclip-tiny", init_from=str(path))  # the lineage is read from the same read
    assert len(calls) == 1 and _same(task.model, tiny)


def test_init_from_and_ckpt_path_share_one_safety_policy(tiny, tmp_path):
    """A checkpoint whose saved hyper-parameters hold a Path (a DataModule built in Python) resumes with
    `--ckpt_path`; `init_from` reads it under the same policy, where it used to refuse it."""
    from pathlib import Path

    from audioclip.tasks.checkpoints import read_resume_checkpoint

    path = tmp_path / "with-path.ckpt"
    state = {f"model.{k}": v for k, v in tiny.state_dict().items()}
    torch.save({"state_dict": state, "datamodule_hyper_parameters": {"root": Path("/data/esc50")}}, path)
    assert read_resume_checkpoint(path)["datamodule_hyper_parameters"]["root"] == Path("/data/esc50")
    assert _same(create_model("audioclip-tiny", pretrained=path), tiny)


def test_paging_out_a_tensor_keeps_its_values(tmp_path):
    from audioclip.memory import page_out

    torch.manual_seed(0)
    saved = {"w": torch.randn(300, 1000), "b": torch.arange(7.0)}
    torch.save(saved, tmp_path / "w.pt")
    mapped = torch.load(tmp_path / "w.pt", mmap=True, weights_only=True)  # read through mmap, as checkpoints are
    for name in saved:
        page_out(mapped[name])
        page_out(saved[name])  # anonymous memory: a hint the kernel may ignore, never a loss
        assert torch.equal(mapped[name], saved[name])
    assert torch.equal(saved["b"], torch.arange(7.0))
