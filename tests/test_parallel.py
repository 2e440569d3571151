import os
import sys
from functools import partial

import cloudpickle

from volslice.parallel import WorkerCrash, imap_surviving_crashes

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import a test module


def square_or_die(item, *, deadly=(), flaky=(), trace=None):
    """Dies natively on ``deadly`` items; on ``flaky`` ones only inside the pool (no trace)."""
    if trace:
        with open(trace, "a") as f:
            f.write(f"file-{item}\n")
    if item in deadly or (item in flaky and trace is None):
        os.abort()
    return item * item


def test_a_worker_that_dies_loses_its_item_only():
    work = partial(square_or_die, deadly={3}, flaky={5})
    results = dict(imap_surviving_crashes(work, range(8), workers=2))
    assert sorted(results) == list(range(8))
    assert isinstance(results[3], WorkerCrash)
    assert results[3].last_file == "file-3" and "reader crashed" in results[3].reason
    assert {k: v for k, v in results.items() if k != 3} == {k: k * k for k in range(8) if k != 3}


def test_results_without_crashes_keep_every_item():
    assert dict(imap_surviving_crashes(partial(square_or_die), range(5), workers=2, queue=3)) == {
        k: k * k for k in range(5)}
