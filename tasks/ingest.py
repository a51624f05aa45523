"""DVC stage `ingest`: find the videos of `data.source`, hash and probe each, attach labels, write the manifest.

    python -m tasks.ingest

Writes data/ingest/manifest.json (surgwm/data/ingest.py). A video that cannot be probed is kept with a one-line
`error`; a bad label file stops the stage with the file, row and column.
"""

from __future__ import annotations

import logging
import sys

from surgwm.data.ingest import IngestError, ingest
from surgwm.data.labels import LabelError
from surgwm.params import load_or_exit


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_or_exit()
    try:
        ingest(params, progress=True)
    except (LabelError, IngestError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
