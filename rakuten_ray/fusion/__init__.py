"""Fusion of model outputs: temperature calibration, per-modality blending, and stacking."""
