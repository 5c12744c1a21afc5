"""The model registry: every registered name builds, embeds or classifies a small input, and survives a state-dict
round trip; `list_models(pattern)` and `list_pretrained()` answer as timm's and open_clip's do."""

import pytest
import torch

from audioclip.models import AUDIO_HEAD, AUDIOCLIP, TAGS, create_model, get_spec, list_models, list_pretrained

AUDIO = torch.randn(2, 1, 8_820) * 1_000  # 0.2 s at 44.1 kHz, int16-range values


def _forward(model, name: str) -> dict[str, torch.Tensor]:
    """What the model computes on the small input: the three embeddings, or the classifier's logits."""
    torch.manual_seed(1)
    with torch.no_grad():
        if get_spec(name).family == AUDIO_HEAD:
            return {"logits": model(AUDIO)}
        image = torch.randn(2, 3, model.visual.input_resolution, model.visual.input_resolution)
        emb = model.embed(AUDIO, image, model.tokenize(["a dog barks", "rain"]))
        return {k: v for k, v in emb.items() if v is not None}


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_runs_and_round_trips_its_state_dict(name):
    spec = get_spec(name)
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert model.model_name == name and spec.family in (AUDIOCLIP, AUDIO_HEAD)
    out = _forward(model, name)
    if spec.family == AUDIOCLIP:
        assert set(out) == {"audio", "image", "text"}
        dim = spec.config.embed_dim
        assert all(v.shape == (2, dim) for v in out.values())
        assert all(torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-5) for v in out.values())
    else:
        assert out["logits"].shape == (2, spec.config.num_classes)
    assert all(torch.isfinite(v).all() for v in out.values())
    torch.manual_seed(99)  # other initial weights: equality below comes from the loaded state only
    copy = create_model(name).eval()
    copy.load_state_dict(model.state_dict(), strict=True)
    again = _forward(copy, name)
    assert all(torch.equal(out[k], again[k]) for k in out)


def test_list_models_takes_a_shell_pattern():
    assert list_models("*-tiny") == ["audioclip-tiny", "esresnext-fbsp-tiny"]
    assert list_models("esresnext*") == ["esresnext-fbsp", "esresnext-fbsp-tiny"]
    assert list_models("nothing*") == []


def test_every_official_tag_loads_into_a_registered_model_of_its_kind():
    pairs = list_pretrained()
    assert ("audioclip", "full") in pairs and ("esresnext-fbsp", "esrnxfbsp") in pairs
    assert sorted(tag for _, tag in pairs) == sorted(TAGS)
    kinds = {"audioclip": AUDIOCLIP, "clip": AUDIOCLIP, "audio": AUDIO_HEAD}
    for name, tag in pairs:
        assert get_spec(name).family == kinds[TAGS[tag].kind], (name, tag)


def test_an_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'audioclip-huge'; known models: audioclip, audioclip-tiny"):
        create_model("audioclip-huge")
