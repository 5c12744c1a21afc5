"""AudioCLIP in PyTorch Lightning."""
