"""The Hugging Face dataset: card, features, splits, push."""
