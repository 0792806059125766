"""`irpo.results`, as notebooks and scripts import it: the reader of run and sweep
directories now lives in irpo/analysis/results.py."""

from irpo.analysis.results import (  # noqa: F401
    RECORD_FILES,
    Job,
    Sweep,
    comparable,
    copy_records,
    eval_samples,
    expected_jobs,
    generation_samples,
    load,
    pairs_across_iterations,
    read_job,
    train_steps,
)
