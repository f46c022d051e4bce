"""Training with Lightning: pretraining (pretrain) and fine-tuning (finetune), the Lightning
systems, the trainer and its callbacks, and the frozen-encoder probe (probe)."""
