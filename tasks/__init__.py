"""The pipeline stages: one thin module per DVC stage (`python -m tasks.<stage>`): read params, call the
library (surgwm/), write outputs. A stage never imports another stage or flows/."""
