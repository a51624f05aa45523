"""Ask DVC once, before any task, what it would do: which stages are stale, and which stages each one depends on.

Why: a flow task per stage that starts `dvc repro --single-item STAGE` pays DVC's start-up (~1-2 s) only to hear
"didn't change, skipping" when nothing changed: 14 times in a no-op `make demo`. One in-process query (DVC's
Python API, what `dvc status --json` prints, plus the stage graph `dvc dag` draws) answers for every stage at once.

What the answer is good for (flows/pipeline.py): DVC checks each stage against the files on disk *now*, so a stage
it reports up to date stays up to date only while nothing upstream of it runs. `Stage.status()` and the check
`dvc repro` makes before running a stage (`Stage.changed()`: command, deps, params, outs, "not in cache") test
the same things, so "up to date here and no upstream stage handed to DVC since" means `dvc repro` would skip it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PipelineStatus:
    stages: list[str]                     # every stage in dvc.yaml's order, foreach groups expanded (train@scratch)
    stale: dict[str, list[Any]]           # stage -> DVC's reasons, as `dvc status --json`; only the stale stages
    upstream: dict[str, frozenset[str]]   # stage -> every stage it depends on, directly or through others
    seconds: float                        # how long the query took (the flow logs it; bench/orchestration.py too)

    def up_to_date(self, stage: str) -> bool:
        return stage in self.upstream and stage not in self.stale

    def groups(self) -> list[str]:
        """Stage names before '@' (train, evaluate, ...), in dvc.yaml's order."""
        return list(dict.fromkeys(s.split("@")[0] for s in self.stages))


class DvcStatusError(RuntimeError):
    """DVC could not read the pipeline (dvc.yaml, params.yaml) in a workspace: nothing was started."""


def pipeline_status(root: Path, tries: int = 3, wait_s: float = 10.0,
                    log: Callable[[str], None] = print) -> PipelineStatus:
    """`dvc status` for every stage of the pipeline in `root`, and the stage graph; waits out a busy DVC lock
    (another `dvc` process in the workspace) `tries` times, as the stage tasks retry a busy lock."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.lock import LockError
    from dvc.repo import Repo

    start = time.monotonic()
    for attempt in range(1, tries + 1):
        try:
            with Repo(str(root)) as repo:
                status = repo.status()                       # {stage.addressing: [reasons]}, stale stages only
                graph = repo.index.graph                     # edges: stage -> the stages whose outs it depends on
                stages = [s for s in repo.index.stages if s.cmd]   # pipeline stages (not `dvc add` .dvc files)
                names = {s.addressing: s.name for s in graph}
                return PipelineStatus(
                    stages=[s.name for s in stages],
                    stale={names.get(k, k): v for k, v in status.items()},
                    upstream={s.name: frozenset(u.name for u in nx.descendants(graph, s)) for s in graph},
                    seconds=time.monotonic() - start,
                )
        except LockError as err:
            if attempt == tries:
                raise DvcStatusError(f"DVC is busy in {root} (another dvc process holds its lock): {err}") from err
            log(f"DVC is busy in {root}; asking again in {wait_s:g} s")
            time.sleep(wait_s)
        except DvcException as err:
            raise DvcStatusError(f"DVC could not read the pipeline in {root}: {err}") from err
    raise AssertionError("unreachable")
