"""What runs leave on disk, read and shown: the reader of run and sweep directories
(results), a sweep's summary and figures (report), the paper in miniature and the other
comparisons (records, intervals, claims, writers, figures), and the W&B workspace (dashboard)."""
