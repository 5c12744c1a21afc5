"""`precision: auto`: bf16-mixed where the hardware computes in bf16, else 32-true; the choice is said
in the run's first line, and mixed precision brings channels-last convolutions with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import audioclip
from audioclip import precision as prec
from audioclip.cli import main
from audioclip.inference import embed_audio
from audioclip.tasks.callbacks import ChannelsLast
from audioclip.tasks.cli import run_lightning_cli

CONF = Path(__file__).resolve().parents[2] / "conf"
CLIP = "cat_3-95694-A-5.wav"


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\n")
    return path


def test_this_machine_gets_bf16_exactly_when_its_cpu_flags_name_native_bf16() -> None:
    flags = Path("/proc/cpuinfo").read_text().split()
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    chosen, why = prec.resolve_precision("auto", "cpu")
    assert chosen == ("bf16-mixed" if native else "32-true")
    assert why.startswith(f"precision auto -> {chosen}: the CPU has")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("avx512f avx512_bf16", "bf16-mixed"), ("amx_tile amx_bf16", "bf16-mixed"), ("avx512f avx512bw", "32-true")],
)
def test_cpu_detection_mocked_both_ways(flags: str, expected: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(prec, "CPUINFO", _cpuinfo(tmp_path, flags))
    chosen, why = prec.resolve_precision("auto", "cpu")
    assert chosen == expected
    if expected == "32-true":
        assert "neither amx_bf16 nor avx512_bf16" in why
    else:
        assert why.endswith(f"the CPU has {flags.split()[-1]}")


def test_without_proc_cpuinfo_torch_capability_decides(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(prec, "CPUINFO", tmp_path / "absent")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert prec.auto_precision("cpu")[0] == "32-true"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AMX")
    assert prec.auto_precision("cpu")[0] == "bf16-mixed"


@pytest.mark.parametrize("native", [True, False])
def test_cuda_detection_mocked_both_ways(native: bool, tmp_path, monkeypatch) -> None:
    # a CPU with bf16, so that a CUDA answer of "no" can only come from the GPU check
    monkeypatch.setattr(prec, "CPUINFO", _cpuinfo(tmp_path, "avx512_bf16"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    chosen, why = prec.resolve_precision("auto", "auto")
    assert chosen == ("bf16-mixed" if native else "32-true") and "Fake GPU" in why
    # an explicit CPU accelerator asks the CPU, not the GPU
    assert prec.resolve_precision("auto", "cpu")[0] == "bf16-mixed"
    # a setting the user gave is kept
    assert prec.resolve_precision("32-true", "auto")[0] == "32-true"


def _fit(tmp_path: Path, *extra: str):
    from audioclip.data.synthetic import write_esc50

    root = write_esc50(tmp_path / "esc50", clips_per_class=2, classes=2, seed=0, progress=False)
    return run_lightning_cli(
        ["fit", "--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "demo.yaml"),
         "--data.init_args.root", str(root), "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "2",
         "--data.init_args.persistent_workers", "false", "--trainer.logger", "false",
         "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.limit_test_batches", "1",
         "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"), *extra]
    )  # fmt: skip


@pytest.mark.parametrize("native", [True, False])
def test_fit_with_the_default_config_says_its_choice_first_and_goes_channels_last_with_bf16(
    native: bool, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(prec, "CPUINFO", _cpuinfo(tmp_path, "avx512_bf16" if native else "avx2"))
    cli = _fit(tmp_path)
    first = capsys.readouterr().err.splitlines()[0]
    expected = "bf16-mixed" if native else "32-true"
    assert first.startswith(f"audioclip: precision auto -> {expected}: the CPU has")
    assert str(cli.trainer.precision) == expected
    assert any(isinstance(cb, ChannelsLast) for cb in cli.trainer.callbacks) == native
    conv = cli.model.model.audio.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) == native


def test_an_explicit_precision_overrides_auto(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(prec, "CPUINFO", _cpuinfo(tmp_path, "avx512_bf16"))
    cli = _fit(tmp_path, "--trainer.precision", "32-true")
    assert capsys.readouterr().err.splitlines()[0] == "audioclip: precision 32-true: as set"
    assert str(cli.trainer.precision) == "32-true"
    assert not any(isinstance(cb, ChannelsLast) for cb in cli.trainer.callbacks)


def test_inference_in_bf16_stays_within_1e_2_of_fp32(tiny_checkpoint, shared_dir) -> None:
    clip = shared_dir / "fixtures/audio" / CLIP
    fp32 = audioclip.load(tiny_checkpoint, precision="32-true")
    bf16 = audioclip.load(tiny_checkpoint, precision="bf16-mixed")
    assert (fp32.precision, bf16.precision) == ("32-true", "bf16-mixed")
    a, b = embed_audio(fp32, clip), embed_audio(bf16, clip)
    assert b.dtype == torch.float32
    # bf16 really ran (the embeddings differ), and stays close to fp32
    assert 0 < (a - b).abs().max() < 1e-2


def test_classify_says_its_precision_first_and_refuses_an_unknown_one(tiny_checkpoint, shared_dir, capsys) -> None:
    clip = str(shared_dir / "fixtures/audio" / CLIP)
    assert main(["classify", clip, "--labels", "cat,dog", "--checkpoint", str(tiny_checkpoint)]) == 0
    assert capsys.readouterr().err.splitlines()[0].startswith("audioclip: precision auto -> ")
    code = main(["classify", clip, "--labels", "cat,dog", "--checkpoint", str(tiny_checkpoint), "--precision", "fp16"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == ("audioclip: error: --precision: one of auto, 32-true, bf16-mixed, got 'fp16'")
