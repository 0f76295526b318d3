"""LoRA supervised fine-tuning of the embedded model, run in a child process.

`finetune.trainer.SubprocessTrainer` is the parent-side entry point; it runs
`python -m sia.finetune.train_lora` so that torch, Unsloth and TRL never load into
the orchestrating process and a killed run can resume from its checkpoints.
This module imports nothing heavy.
"""
