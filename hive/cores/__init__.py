"""A core's lifecycle: its files, the gate, the MLflow registry and the release to the fleet."""
