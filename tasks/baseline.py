"""DVC stage `baseline`: a reference evaluated beside the trained runs (`python -m tasks.baseline <name>`).

<name> is one of `evaluate.baselines`: `untrained_encoder` (the pretrained encoder's architecture, randomly
initialised) or `raw_pixels` (no encoder: pooled pixels). Same split, probes and metrics as `evaluate`
(tasks/evaluate.py), so the report can say whether pretraining helped on this data instead of assuming it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tasks.evaluate import main as evaluate_main
from tasks.params import BASELINE_NAMES


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [a for a in argv if not a.startswith("-")]
    if names and names[0] not in BASELINE_NAMES:
        print(f"error: baseline {names[0]!r} is not one of {', '.join(BASELINE_NAMES)} "
              "(trained runs are evaluated by `python -m tasks.evaluate <run>`)", file=sys.stderr)
        return 2
    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
