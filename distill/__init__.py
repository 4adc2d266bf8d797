"""The distillation job: KD losses, the round's dataset, and the DeepSpeed job with its launcher."""
