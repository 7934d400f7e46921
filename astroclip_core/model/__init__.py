"""The contrastive model: encoders, heads, loss and presets."""
