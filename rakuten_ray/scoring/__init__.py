"""Batch scoring: stages, the in-process engine and the Ray Data engine."""
