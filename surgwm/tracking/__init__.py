"""MLflow: the tracking client (store, tags) and the model registry (versions, champion/challenger gate)."""
