"""Training M_{t+1}: the LightningModule and datamodule, the trainer presets as objects
(trainers.py), log-prob passes, batching, numerics and checkpoint selection."""
