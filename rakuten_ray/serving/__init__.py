"""Online scoring: the same stages as batch scoring, one product at a time, on Ray Serve."""
