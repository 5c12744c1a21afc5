"""`audioclip fit`'s first checks (`audioclip.tasks.entry`): read from the config files and the command line alone,
before Lightning is imported, so a configuration that does not fit the data is refused in about a second instead of
after several seconds of imports. What cannot be read there with certainty is left to the LightningCLI."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audioclip.data.synthetic import write_us8k
from audioclip.tasks.entry import (
    _Unsure,
    check_before_lightning,
    check_settings,
    expand_defaults,
    missing_weights_file,
    resolved_settings,
)

ROOT = Path(__file__).resolve().parents[2]


def test_settings_are_the_configs_merged_in_order_then_the_command_line(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"model": {"class_path": "audioclip.tasks.FinetuneModule",
                                              "init_args": {"num_classes": 50, "init_from": "full"}},
                                    "data": {"class_path": "audioclip.data.ESC50DataModule",
                                             "init_args": {"root": "data/esc50", "fold": 1}}}))  # fmt: skip
    phase = tmp_path / "phase.yaml"
    phase.write_text(yaml.safe_dump({"defaults": ["base.yaml"], "data": {"init_args": {"fold": 3}}}))
    settings = resolved_settings(["--config", str(phase), "--model.num_classes", "7", "--data.init_args.root=/d",
                                  "--trainer.max_epochs", "2", "--print_config"])  # fmt: skip
    assert settings["model"] == {"class_path": "audioclip.tasks.FinetuneModule",
                                 "init_args": {"num_classes": 7, "init_from": "full"}}  # fmt: skip
    assert settings["data"]["init_args"] == {"root": "/d", "fold": 3}
    assert settings["trainer"] == {"max_epochs": 2}
    # another class: the first class's arguments do not carry over to it
    other = resolved_settings(["--config", str(base), "--data", "audioclip.data.US8KDataModule"])
    assert other["data"] == {"class_path": "audioclip.data.US8KDataModule"}
    switch = tmp_path / "us8k.yaml"
    us8k = {"class_path": "audioclip.data.US8KDataModule", "init_args": {"root": "u"}}
    switch.write_text(yaml.safe_dump({"data": us8k}))
    assert resolved_settings(["--config", str(base), "--config", str(switch)])["data"] == us8k
    assert resolved_settings(["--config", str(base), "-c", str(switch)])["data"] == us8k  # jsonargparse's short form
    with pytest.raises(_Unsure):
        resolved_settings(["--config", str(base), "-x", "1"])
    with pytest.raises(_Unsure):
        resolved_settings(["--config", "model: [unclosed"])


@pytest.fixture(scope="module")
def us8k(tmp_path_factory):
    return write_us8k(tmp_path_factory.mktemp("us8k") / "us8k", clips_per_class=2, classes=3, progress=False)


def _settings(module: str, num_classes, root) -> dict:
    return {"model": {"class_path": f"audioclip.tasks.{module}", "init_args": {"num_classes": num_classes}},
            "data": {"class_path": "audioclip.data.US8KDataModule", "init_args": {"root": str(root)}}}  # fmt: skip


def test_a_fixed_class_count_is_compared_with_the_metadatas(us8k):
    wording = r"^model.num_classes: the model is set up for 10 classes but the dataset has 3$"
    with pytest.raises(ValueError, match=wording):
        check_settings(_settings("FinetuneModule", 10, us8k))
    with pytest.raises(ValueError, match=r"the classifier has 2 outputs but the dataset has 3 classes \(leave"):
        check_settings(_settings("AudioPretrainModule", 2, us8k))
    check_settings(_settings("FinetuneModule", 3, us8k))  # the data's count
    check_settings(_settings("FinetuneModule", None, us8k))  # none fixed: the data decides
    check_settings(_settings("FinetuneModule", 10, us8k / "elsewhere"))  # the DataModule names a missing dataset


def test_an_init_file_that_does_not_exist_is_refused_and_tags_and_urls_are_left_alone(tmp_path):
    gone = tmp_path / "gone" / "x.ckpt"
    with pytest.raises(ValueError, match=f"^init_from: {gone}: no such file$"):
        check_settings({"model": {"init_args": {"init_from": str(gone)}}})
    for init in ("full", "s3://bucket/run/last.ckpt", "hf://owner/name", str(tmp_path)):
        check_settings({"model": {"init_args": {"init_from": init}}})


def test_a_command_that_only_prints_is_not_checked(tmp_path):
    argv = ["--model.init_args.init_from", str(tmp_path / "gone.ckpt")]
    with pytest.raises(ValueError):
        check_before_lightning(argv)
    check_before_lightning([*argv, "--print_config"])


def test_the_class_count_refusal_comes_before_lightning_is_imported(us8k, tmp_path):
    argv = ["fit", "--config", str(ROOT / "conf/finetune-us8k-audio-head.yaml"), "--data.init_args.root", str(us8k),
            "--model.init_args.num_classes", "5", "--trainer.default_root_dir", str(tmp_path / "runs")]  # fmt: skip
    code = (
        "import sys; from audioclip.cli import main; code = main(sys.argv[1:]); "
        "print('lightning', 'imported' if 'lightning' in sys.modules else 'not imported'); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == ("audioclip: error: model.num_classes: the classifier has 5 outputs but the dataset "
                                   "has 3 classes (leave num_classes out to take the data's)")  # fmt: skip
    assert done.stdout.strip() == "lightning not imported"
    assert not (us8k / ".audioclip-cache").exists() and not (tmp_path / "runs").exists()


def test_a_yaml_string_config_reaches_jsonargparse_as_given():
    text = "trainer: {default_root_dir: 's3://bucket/runs/x'}"  # as a path, s3:// would fold to s3:/
    assert expand_defaults(["-c", text, "--trainer.max_epochs", "1"]) == ["--config", text, "--trainer.max_epochs", "1"]


def test_only_a_local_path_can_be_a_missing_weights_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.ckpt").touch()
    assert missing_weights_file(str(tmp_path / "gone.ckpt")) and missing_weights_file("runs/gone/last.ckpt")
    for present in ("~/mine.ckpt", "hf://owner/name", "s3://bucket/x.ckpt", "full", str(tmp_path / "mine.ckpt")):
        assert not missing_weights_file(present), present


@pytest.mark.parametrize(
    "option, class_path",
    [("--model=AudioPretrainModule", "audioclip.tasks.AudioPretrainModule"),
     ("--data=US8KDataModule", "audioclip.data.US8KDataModule")],
)  # fmt: skip
def test_a_short_class_name_is_found_though_the_packages_import_on_first_use(option, class_path):
    config = str(ROOT / "conf/finetune-esc50.yaml")
    done = subprocess.run([sys.executable, "-m", "audioclip.cli", "fit", "--config", config, option, "--print_config"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"class_path: {class_path}" in done.stdout


def test_your_own_datas_class_count_is_read_from_its_tree_or_manifest(tmp_path):
    for name in ("dog_bark", "rain", "siren"):
        (tmp_path / "tree" / name).mkdir(parents=True)
        (tmp_path / "tree" / name / "a.wav").touch()  # listed, never decoded
    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,labels\na.wav,dog;rain\nb.wav,rain\n")
    model = {"class_path": "audioclip.tasks.FolderFinetuneModule", "init_args": {"num_classes": 4}}
    for data, count in (({"root": str(tmp_path / "tree")}, 3), ({"manifest": str(manifest)}, 2)):
        settings = {"model": model, "data": {"class_path": "audioclip.data.AudioFolderDataModule", "init_args": data}}
        with pytest.raises(ValueError, match=f"set up for 4 classes but the dataset has {count}$"):
            check_settings(settings)
