"""DVC stage `ingest`: find the videos of `data.source`, hash and probe each, attach labels, write the manifest.

    python -m tasks.ingest

Writes data/ingest/manifest.json (surgwm/data/ingest.py). A video that cannot be probed is kept with a one-line
`error`; a malformed label file stops the stage with the file, row and column; so do a data.root without videos
(the message says what is there) and, for SurgVU, a data.labels_root where no case has a tasks.csv. Cases without
labels, part gaps and labels past a video's end are warnings (docs/data.md lists every text).
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
