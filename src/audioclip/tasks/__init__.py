"""The training layer: one LightningModule per phase (one file each), their shared base, the training CLI, the
run-safety callbacks, checkpoint files and W&B runs. `models/` stays free of Lightning.

| phase (make target)                 | module                                        | file                     |
|-------------------------------------|-----------------------------------------------|--------------------------|
| pretrain-audio, finetune-*-audio-head | `AudioPretrainModule`                       | audio_head.py            |
| train-partial, train-full           | `PartialTrainingModule`, `FullTrainingModule` | audioset_contrastive.py  |
| finetune-esc50, finetune-us8k       | `FinetuneModule`                              | finetune.py              |
| finetune (own data)                 | `FolderFinetuneModule`                        | finetune_folder.py       |
"""

from audioclip.lazy import lazy_exports

# imported on first use: `audioclip fit` checks its settings (`audioclip.tasks.entry`) before Lightning is imported
_LAZY = {
    "AudioCLIPTask": "audioclip.tasks.base",
    "AudioPretrainModule": "audioclip.tasks.audio_head",
    "AudioSetContrastiveModule": "audioclip.tasks.audioset_contrastive",
    "ChannelsLast": "audioclip.tasks.callbacks",
    "FinetuneModule": "audioclip.tasks.finetune",
    "FolderFinetuneModule": "audioclip.tasks.finetune_folder",
    "FullTrainingModule": "audioclip.tasks.audioset_contrastive",
    "PartialTrainingModule": "audioclip.tasks.audioset_contrastive",
}
__all__ = [
    "AudioCLIPTask",
    "AudioPretrainModule",
    "AudioSetContrastiveModule",
    "ChannelsLast",
    "FinetuneModule",
    "FolderFinetuneModule",
    "FullTrainingModule",
    "PartialTrainingModule",
]
__getattr__ = lazy_exports(__name__, _LAZY)
