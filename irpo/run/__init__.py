"""The run and its records: the run directory and its manifest, fingerprints, logs and
metrics, progress, and everything that differs by rank or process (distributed, threads,
liveness, preemption)."""
