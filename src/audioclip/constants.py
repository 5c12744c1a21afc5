"""Numbers the paper and the datasets fix, each written down once; importable without torch.

- `SAMPLE_RATE`: the ESResNeXt-fbsp front end's rate (Guzhov et al. 2021, section 3.2; docs/design.md,
  "The model, exactly").
- `AUDIOSET_CLASSES`: AudioSet's ontology leaves with labels (Gemmeke et al. 2017, `class_labels_indices.csv`).
- `FOLDS`: the official folds of ESC-50 (Piczak 2015) and UrbanSound8K (Salamon et al. 2014).
"""

SAMPLE_RATE = 44_100
AUDIOSET_CLASSES = 527
ESC50_FOLDS = 5
US8K_FOLDS = 10
FOLDS = {"esc50": ESC50_FOLDS, "us8k": US8K_FOLDS}  # by the dataset names of `audioclip evaluate --dataset`
INT16_SCALE = 32768.0  # int16 sample values <-> [-1, 1) floats: soundfile's PCM_16 scale
