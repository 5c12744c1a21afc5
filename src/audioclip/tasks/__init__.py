"""LightningModules for the four training phases; `models/` stays free of Lightning."""

from audioclip.tasks.base import AudioCLIPTask
from audioclip.tasks.phases import AudioPretrainModule, FinetuneModule, FullTrainingModule, PartialTrainingModule

__all__ = ["AudioCLIPTask", "AudioPretrainModule", "FinetuneModule", "FullTrainingModule", "PartialTrainingModule"]
