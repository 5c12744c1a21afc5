"""Shipping a trained model: `audioclip export` (safetensors + config + model card, the Hugging Face Hub, ONNX).

See docs/shipping.md. `export_model` writes the folder; `audioclip.load(folder)` and `audioclip.load("hf://...")`
read it back through `audioclip.models.pretrained.read_weights`.
"""
