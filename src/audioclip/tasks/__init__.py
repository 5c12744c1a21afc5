"""LightningModules for the four training phases; `models/` stays free of Lightning."""

from audioclip.tasks.base import AudioCLIPTask
from audioclip.tasks.callbacks import ChannelsLast
from audioclip.tasks.finetune_folder import FolderFinetuneModule
from audioclip.tasks.phases import AudioPretrainModule, FinetuneModule, FullTrainingModule, PartialTrainingModule

__all__ = [
    "AudioCLIPTask",
    "ChannelsLast",
    "AudioPretrainModule",
    "FinetuneModule",
    "FolderFinetuneModule",
    "FullTrainingModule",
    "PartialTrainingModule",
]
