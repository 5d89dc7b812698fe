"""`notmnist search`: one worker of a study, with `search.workers - 1` more local ones."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence

from pipeline.config import AppConfig, SearchConfig
from pipeline.errors import RunsFailedError

log = logging.getLogger(__name__)


def main(
    search: SearchConfig,
    cfg: AppConfig,
    overrides: Sequence[str],
    space: str = "",
    hydra_overrides: Sequence[str] = (),
) -> int:
    """Join the study and work on it, or only report it (`search report`). The worker decodes
    the data once, before joining: the study checks its digest against the one it was started
    with. A local worker that failed is a RunsFailedError."""
    from pipeline.jobs.search.report import report
    from pipeline.jobs.search.study import join
    from pipeline.jobs.search.worker import work
    from pipeline.jobs.training import load_data
    from pipeline.stages.train import limit_threads

    if search.report_only:
        study = join(search, cfg, space)
        with study.locked():
            report(study)
        return 0
    threads = search.threads or max(1, (os.cpu_count() or 1) // search.workers)
    limit_threads(threads)
    command = [*overrides, *hydra_overrides]
    helpers = [_spawn(command, threads, i) for i in range(1, search.workers)]
    try:
        varies_data = any(key.startswith("data.") for key in search.params)
        dataset = None if varies_data else load_data(cfg.data)  # once per worker, not per trial
        digest = None if dataset is None else dataset.digest()
        study = join(search, cfg, space, digest, overrides)
        ran = 0 if study.finished_before else work(study, cfg, overrides, threads, dataset)
        if ran:
            log.info("This worker ran %d trials of study '%s'", ran, search.study)
        else:  # nothing left for it: say what the study holds and where its report is
            log.info("%s", study.summary())
    finally:
        codes = [_reap(p) for p in helpers]
    if failed := [c for c in codes if c]:
        raise RunsFailedError(
            f"{len(failed)} of the study's {len(codes)} other local workers failed "
            f"(exit codes {', '.join(map(str, failed))})"
        )
    return 0


def _spawn(overrides: Sequence[str], threads: int, index: int) -> subprocess.Popen[bytes]:
    """One more worker: the same command, as a single worker with its share of the cores."""
    mine = ("search.workers=", "search.threads=", "hydra.run.dir=", "hydra.mode=")
    own = [o for o in overrides if not o.startswith(mine)]
    args = [*own, "search.workers=1", f"search.threads={threads}"]
    args += [f"hydra.run.dir=outputs/search-workers/{os.getpid()}-{index}"]
    return subprocess.Popen([sys.executable, "-m", "pipeline", "search", *args])


def _reap(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        return proc.wait()
