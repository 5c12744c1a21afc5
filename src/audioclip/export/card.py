"""The model card (`README.md` of an exported folder): what the weights are, where they came from, how well they did.

Layout after the Hugging Face Hub's model cards (huggingface_hub "Model Cards" guide: a YAML block of metadata, then
Markdown) and open_clip's pretrained-model cards (model, training data, results, license). The test figures are the
run's own `test_metrics.json`, never recomputed; a figure of the paper (Guzhov et al. 2021, Tables 1-4) stands
beside one only where `make report` would set them side by side (`audioclip.evaluation.report.why_not_comparable`:
real data all along the lineage, the paper-size model, the same variant, dataset, metric and setting), otherwise
the card says why not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audioclip.evaluation.report import report_rows, training_measures

PAPER_VARIANTS = ("audio-head", "partial", "full")
EXAMPLE_LABELS = "'dog barking', 'rain', 'siren'"
HUB_TAGS = ("audio", "audio-classification", "zero-shot-audio-classification", "audioclip", "clip")
# the licenses of the data the official weights and the fine-tuning phases saw (each dataset's own page)
DATA_LICENSES = {
    "esc50": "ESC-50: CC BY-NC 3.0 (Piczak 2015, github.com/karolpiczak/ESC-50)",
    "us8k": "UrbanSound8K: CC BY-NC 3.0 (Salamon et al. 2014, urbansounddataset.weebly.com)",
    "audioset": "AudioSet: labels CC BY 4.0, the audio stays under its uploaders' terms (Gemmeke et al. 2017)",
}


def card_figures(run: Path | None, record: dict | None) -> list[dict[str, Any]]:
    """Each test figure of the run: metric, ours (the run's value, in percent), the paper's figure where comparable,
    and a note (the paper's row, or why none stands beside it)."""
    if run is None or record is None:
        return []
    rows = [row for row in report_rows(training_measures(run)) if row["ours"] is not None]
    figures = []
    for row in rows:
        paper = f"Table {row['table']}, {row['model']}" if row["comparable"] else ""
        figures.append({"metric": f"{row['dataset']} {row['query']} -> {row['result']} {row['metric']}",
                        "ours": row["ours"], "paper": row["paper"] if row["comparable"] else None,
                        "note": paper or row["note"]})  # fmt: skip
    return figures


def _front_matter(config: dict) -> list[str]:
    tags = "\n".join(f"- {tag}" for tag in HUB_TAGS)
    return ["---", f"license: {config['license']}", "library_name: audioclip-lightning",
            "pipeline_tag: zero-shot-audio-classification", f"tags:\n{tags}", "---", ""]  # fmt: skip


def _lineage(config: dict) -> list[str]:
    lineage = config["lineage"]
    lines = ["## Lineage", "", f"- Variant: `{lineage.get('variant', 'other')}` (the paper's `audio-head`, `partial` "
             "or `full`, else `other`)", f"- Started from: {lineage.get('origin', 'unknown')}"]  # fmt: skip
    steps = lineage.get("steps", [])
    if steps:
        lines += ["", "| step | phase | dataset | data | test fold | training folds | protocol |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for number, step in enumerate(steps, start=1):
            folds = ", ".join(map(str, step.get("train_folds", []))) or "—"
            lines.append(f"| {number} | {step.get('phase', '?')} | {step.get('dataset', '?')} | {step.get('data', '?')}"
                         f" | {step.get('test_fold') or '—'} | {folds} | {step.get('protocol', '—')} |")  # fmt: skip
    else:
        lines.append("- No training step of this project (the weights as they were published or initialised).")
    return [*lines, ""]


def _results(figures: list[dict], record: dict | None) -> list[str]:
    lines = ["## Test results", ""]
    if not figures:
        return [*lines, "No test metrics: these weights are not the tested checkpoint of a run of this project.", ""]
    lines += [f"From the run's `test_metrics.json` (checkpoint `{Path(record['checkpoint']).name}`), in percent.", "",
              "| metric | ours | paper | note |", "|---|---|---|---|"]  # fmt: skip
    for figure in figures:
        paper = "—" if figure["paper"] is None else f"{figure['paper']:.2f}"
        lines.append(f"| {figure['metric']} | {figure['ours']:.2f} | {paper} | {figure['note']} |")
    return [*lines, ""]


def _onnx(config: dict) -> list[str]:
    onnx = config.get("onnx")
    if not onnx:
        return []
    lines = ["## ONNX", "", f"`audio_encoder.onnx` and `text_encoder.onnx` (opset {onnx['opset']}, exported with torch "
             f"{onnx['torch']}), for onnxruntime: `audioclip classify --checkpoint DIR --backend onnxruntime`. "
             "Inference only (no gradients, no training). Parity with PyTorch eager fp32, measured by the export on "
             "inputs of the real shape:", "", "| encoder | inputs | max abs difference |", "|---|---|---|"]  # fmt: skip
    for name, check in onnx["parity"].items():
        lines.append(f"| {name} | {check['inputs']} | {check['max_abs_diff']:.2e} |")
    return [*lines, ""]


def render_card(config: dict, run: Path | None, record: dict | None, figures: list[dict]) -> str:
    """The card's Markdown, from the export's config, the run (if the weights are a run's) and its test figures."""
    name = config["architecture"]
    classes = config.get("class_names") or []
    datasets = {step.get("dataset") for step in config["lineage"].get("steps", [])} - {None}
    if config["lineage"].get("variant") in PAPER_VARIANTS:  # every variant of the paper was trained on AudioSet
        datasets.add("audioset")
    lines = [*_front_matter(config), f"# AudioCLIP ({name})", "",
             "AudioCLIP (Guzhov et al. 2021, \"AudioCLIP: Extending CLIP to Image, Text and Audio\", arXiv 2106.13043):"
             " CLIP RN50's image and text heads and an ESResNeXt-fbsp audio head embedding into one "
             f"{config['embed_dim']}-d space. Exported by audioclip-lightning {config['exported_with']} from "
             f"`{config['source']}`.", "",
             "## Use", "", "```python", "import audioclip", "",
             "model = audioclip.load(\"hf://OWNER/NAME\")  # or the folder holding this card",
             f"audioclip.classify(model, \"clip.wav\", [{', '.join(repr(c) for c in classes[:3]) or EXAMPLE_LABELS}])",
             "```", "",
             f"Audio: any file or waveform, of any length (`--window`/`--hop` for a timeline); it is resampled to "
             f"{config['sample_rate']} Hz. Class names: "
             f"{', '.join(classes) if classes else 'none recorded (zero-shot: give your own)'}; "
             f"prompt template `{config['prompt_template']}`.", "",
             *_lineage(config), *_results(figures, record)]  # fmt: skip
    if run is not None and config.get("training_config"):
        lines += ["## Training", "", f"Run folder `{run}`. The resolved configuration is `{config['training_config']}`"
                  " beside this card; it trains these weights again with", "", "```bash",
                  f"audioclip fit --config {config['training_config']}", "```", ""]  # fmt: skip
    lines += _onnx(config)
    lines += ["## License", "", f"The weights: {config['license']}. The official AudioCLIP weights and OpenAI's CLIP "
              "are MIT-licensed. The training data keeps its own terms:"]  # fmt: skip
    lines += [f"- {DATA_LICENSES[d]}" for d in sorted(datasets) if d in DATA_LICENSES] or ["- (no dataset recorded)"]
    return "\n".join(lines) + "\n"
