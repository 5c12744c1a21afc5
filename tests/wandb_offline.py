"""Reading an offline W&B run the way a user would: `wandb leet inspect --summary --json <run dir>`."""

import json
import subprocess
import sys
from pathlib import Path


def wandb_run(run: Path) -> dict:
    """Config and summary of the (single) offline W&B run under `run/wandb/`."""
    run_dir = next((run / "wandb").glob("offline-run-*"))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--summary", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def wandb_records(run: Path) -> list[dict]:
    """Every record of the (single) offline W&B run under `run/wandb/`, as `wandb leet inspect --json` prints them."""
    run_dir = next((run / "wandb").glob("offline-run-*"))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
