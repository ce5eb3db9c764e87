"""Sharing on the Hugging Face Hub: upload and the model card."""
