"""Run per-series work in worker processes so that a native crash loses one series, not the run.

A decoder written in C++ can kill the process that calls it (see ``dicom.dicomsdl_can_open`` for the
cases known). ``imap_surviving_crashes`` keeps a bounded number of items in flight in a pool of
processes; when a worker dies, a new pool is started, every item that was in flight is retried alone
in a fresh process that records each file before it is decoded, and an item whose lone retry dies
too is returned as a ``WorkerCrash`` naming the last file it reached. Every other item goes on.
No torch here.
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from joblib.externals.loky import ProcessPoolExecutor
from joblib.externals.loky.process_executor import BrokenProcessPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerCrash:
    """An item whose process died in the pool and again when retried alone."""

    reason: str
    last_file: str | None  # the file being read when it died, where the trace caught it


def imap_surviving_crashes(function: Callable, items: Iterable, workers: int,
                           queue: int | None = None) -> Iterator[tuple]:
    """(item, function(item) or WorkerCrash) for every item, in completion order, with at most
    ``queue`` items (default: ``workers``) submitted and unfinished at a time.

    ``function`` must be picklable by reference and accept ``trace=None``: a file path to which it
    has the reader append each file's name before decoding it (``dicom.trace_files``).
    """
    pending = list(items)[::-1]  # popped from the end: the caller's order is kept
    queue = queue or workers
    while pending:
        in_flight = {}
        broken = None
        # a pool of its own (joblib's shared one restarts when its settings differ): starting it
        # costs about a second, once per call
        with ProcessPoolExecutor(max_workers=workers) as executor:
            while (pending or in_flight) and broken is None:
                try:
                    while pending and len(in_flight) < queue:
                        future = executor.submit(function, pending[-1])  # raises first if the pool broke
                        in_flight[future] = pending.pop()
                except BrokenProcessPool as error:  # a worker died before this item could be queued
                    broken = error
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    error = future.exception()
                    if isinstance(error, BrokenProcessPool):
                        broken = error
                    elif error is not None:
                        raise error
                    else:
                        yield in_flight.pop(future), future.result()
        if broken is not None:
            log.warning("a worker process died (%s); retrying the %d item(s) in flight, each alone",
                        broken, len(in_flight))
            for item in in_flight.values():
                yield item, run_alone(function, item)


def run_alone(function: Callable, item):
    """function(item) in a fresh process of its own, with a file trace; WorkerCrash if it dies."""
    with tempfile.TemporaryDirectory(prefix="volslice-trace-") as folder:
        trace = Path(folder) / "files.txt"
        with ProcessPoolExecutor(max_workers=1) as lone:
            try:
                return lone.submit(function, item, trace=str(trace)).result()
            except BrokenProcessPool as err:
                lines = trace.read_text().splitlines() if trace.exists() else []
                last = lines[-1] if lines else None
                log.warning("the reader died again on its own%s", f" at {last}" if last else "")
                return WorkerCrash(f"reader crashed ({type(err).__name__})", last)
