"""surgwm: the library behind the pipeline stages (tasks/) and flows (flows/): data, training, evaluation, tracking."""
