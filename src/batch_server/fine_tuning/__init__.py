"""Fine-tuning: LoRA adapters trained on a registered model's Hugging Face checkpoint.

The training itself runs in a child process (:mod:`.train_process`) that the worker drives
through :mod:`.runner` (JSON lines: steps, checkpoints, done); :mod:`.hyperparameters`
turns OpenAI's hyperparameters into the values used; :mod:`.base_models` finds (or makes)
the checkpoint to train on; :mod:`.merge` folds a finished adapter into a checkpoint that
the vLLM engine serves.
"""
