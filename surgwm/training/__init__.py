"""World-model training: methods, the training step and loop, checkpoints, the frozen feature cache, DDP, pretrained weights."""
