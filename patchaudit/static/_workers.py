"""Parse files in worker processes, surviving a worker that dies.

A worker killed while parsing (the kernel's out-of-memory killer, a signal, a crash in the
parser) breaks a ``ProcessPoolExecutor`` for every file still in it. The files that had not
finished are then parsed again, each alone in a one-worker pool, so a file that kills its worker
again is named and costs only itself; the run goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._safeio import read_regular
from ._cache import encode_summary
from ._summary import FileSummary, summarize

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

PARALLEL_THRESHOLD = 48  # below this, starting worker processes costs more than it saves
WORKER_DIED = (
    "cannot analyse: the process parsing it died (killed, out of memory or a crash in Python's "
    "parser); exclude the file if this repeats"
)

Work = tuple[str, str | None, bool, str, int]  # relpath, module, is_package, path, size limit
Parsed = tuple[FileSummary, str, str | None]  # the summary, its stored form and its digest


def parse_all(
    work: list[Work], jobs: int | None, progress: Callable[[int], None] | None = None
) -> list[Parsed | None]:
    """Summaries in the order of ``work``, each with its stored form and digest (encoded in the
    worker: one less serial step in the main process); None for a file whose worker process
    died. ``progress`` is told how many files are done, as they finish."""
    report = progress or (lambda done: None)
    workers = jobs or os.cpu_count() or 1
    if workers > 1 and len(work) >= PARALLEL_THRESHOLD:
        return _in_pool(work, workers, report)
    results: list[Parsed | None] = []
    for item in work:
        results.append(_parsed(item))
        report(len(results))
    return results


def summarize_path(item: Work) -> FileSummary:
    relpath, module, is_package, path, limit = item
    try:
        data = read_regular(path, limit)  # the same checks as the pre-scan: never a FIFO
    except OSError as exc:  # changed or removed since the pre-scan read it
        summary = FileSummary(relpath, module, is_package)
        summary.internal_error = f"cannot read ({exc.strerror or exc})"
        return summary
    return summarize(relpath, module, is_package, data)


def _parsed(item: Work) -> Parsed:
    summary = summarize_path(item)
    return (summary, *encode_summary(summary))


def _summarize_chunk(items: list[Work]) -> list[Parsed]:
    return [_parsed(item) for item in items]


def _in_pool(work: list[Work], workers: int, report: Callable[[int], None]) -> list[Parsed | None]:
    # imported here: a pool costs 8 ms of imports, which a run parsing one file does not need
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    results: list[Parsed | None] = [None] * len(work)
    chunk = max(1, len(work) // (workers * 4))
    unfinished: list[int] = []
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        futures = [
            (pool.submit(_summarize_chunk, work[start : start + chunk]), start)
            for start in range(0, len(work), chunk)
        ]
        for future, start in futures:
            indexes = range(start, min(start + chunk, len(work)))
            try:
                for index, summary in zip(indexes, future.result(), strict=True):
                    results[index] = summary
                report(indexes.stop)
            except BrokenProcessPool:
                unfinished.extend(indexes)
    if unfinished:
        _one_by_one(work, unfinished, results, workers)
    return results


def _one_by_one(
    work: list[Work], queue: list[int], results: list[Parsed | None], workers: int
) -> None:
    """Each file alone in a one-worker pool (up to ``workers`` at once): a broken pool names
    its file, which keeps None."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    context = get_context("fork")
    running: dict[Future[Parsed], tuple[int, ProcessPoolExecutor]] = {}
    idle: list[ProcessPoolExecutor] = []
    queue = list(reversed(queue))
    try:
        while queue or running:
            while queue and len(running) < workers:
                pool = idle.pop() if idle else ProcessPoolExecutor(1, mp_context=context)
                index = queue.pop()
                running[pool.submit(_parsed, work[index])] = (index, pool)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index, pool = running.pop(future)
                try:
                    results[index] = future.result()
                    idle.append(pool)
                except BrokenProcessPool:
                    pool.shutdown(wait=True)
    finally:
        for pool in idle + [pool for _, pool in running.values()]:
            pool.shutdown(wait=True, cancel_futures=True)
