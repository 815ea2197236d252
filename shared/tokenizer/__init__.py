"""Tokenizer and vocabulary: MEDS timelines become token sequences for the model."""
