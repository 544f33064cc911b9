"""The ViTs (edge and server), their checkpoints, conversion from timm / Hugging Face / big_vision,
and training of the embedded Fashion-MNIST models."""
