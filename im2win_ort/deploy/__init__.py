"""Deploying rewritten models: a Triton Inference Server model repository (triton)."""
