"""The training layer: one LightningModule per phase (one file each), their shared base, the training CLI, the
run-safety callbacks, checkpoint files and W&B runs. `models/` stays free of Lightning.

| phase (make target)                 | module                                        | file                     |
|-------------------------------------|-----------------------------------------------|--------------------------|
| pretrain-audio, finetune-*-audio-head | `AudioPretrainModule`                       | audio_head.py            |
| train-partial, train-full           | `PartialTrainingModule`, `FullTrainingModule` | audioset_contrastive.py  |
| finetune-esc50, finetune-us8k       | `FinetuneModule`                              | finetune.py              |
| finetune (own data)                 | `FolderFinetuneModule`                        | finetune_folder.py       |
"""

from audioclip.tasks.audio_head import AudioPretrainModule
from audioclip.tasks.audioset_contrastive import AudioSetContrastiveModule, FullTrainingModule, PartialTrainingModule
from audioclip.tasks.base import AudioCLIPTask
from audioclip.tasks.callbacks import ChannelsLast
from audioclip.tasks.finetune import FinetuneModule
from audioclip.tasks.finetune_folder import FolderFinetuneModule

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
