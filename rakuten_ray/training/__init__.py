"""Training: the Ray Train loop, base models and the whole protocol."""
