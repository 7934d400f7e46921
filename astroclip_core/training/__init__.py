"""Training: data loading, the train loop and checkpoints."""
