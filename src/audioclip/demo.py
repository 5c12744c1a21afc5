"""`make demo`: fine-tune the tiny AudioCLIP on the synthetic ESC-50-layout dataset (fold 1) on CPU, then test.

Writes the synthetic data first when it is missing, trains with a progress bar, prints the test accuracy of the
checkpoint selected on the validation split, and where the checkpoint and the offline W&B run are.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from audioclip.data.provenance import data_kind, mark_synthetic
from audioclip.tasks.checkpoints import checkpoint_dir
from audioclip.tasks.cli import run_lightning_cli
from audioclip.tasks.preflight import earlier_checkpoints

DATA = Path("data/synthetic/esc50")
RUN = Path("runs/demo/fold1")


def main(argv: list[str] | None = None) -> int:
    if not (DATA / "meta" / "esc50.csv").is_file():
        from audioclip.data.synthetic import main as write_synthetic

        write_synthetic(["--esc50", str(DATA), "--clips-per-class", "30"])
    if data_kind(DATA) != "synthetic":  # a tree written before the generators marked their trees
        mark_synthetic(DATA, "audioclip.data.synthetic (marked by the demo)")
    extra = list(sys.argv[1:] if argv is None else argv)
    if earlier_checkpoints(RUN):  # the demo is meant to be run again; a real run directory is refused instead
        print(f"make demo: replacing the previous demo's checkpoints in {checkpoint_dir(RUN)}")
        shutil.rmtree(checkpoint_dir(RUN))
    cli = run_lightning_cli(
        [
            "fit",
            "--config",
            "conf/trainer.yaml",
            "--config",
            "conf/demo.yaml",
            "--trainer.default_root_dir",
            str(RUN),
            *extra,
        ]
    )
    metrics = json.loads((RUN / "test_metrics.json").read_text())
    classes = len(cli.datamodule.class_names)
    print(f"\nTest accuracy (fold 1, {classes} classes, chance {1 / classes:.0%}): {metrics['test/acc']:.1%}")
    print(f"Checkpoint (best on val/acc): {metrics['checkpoint']}")
    wandb_dirs = sorted((RUN / "wandb").glob("offline-run-*"))
    if wandb_dirs:
        print(f"W&B offline run: {wandb_dirs[-1]}  (upload with `wandb sync {wandb_dirs[-1]}`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
