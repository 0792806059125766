"""`python -m irpo.report <run or sweep dir>`, and `irpo.report` as notebooks, scripts and the
Hydra callback of earlier runs' records (`irpo.report.ReportCallback`) name it: the report
now lives in irpo/analysis/."""

from irpo.analysis.figures import accuracy_figure, logps_figure, moving_average, train_figure  # noqa: F401
from irpo.analysis.report import FIGURES, ReportCallback, describe, main, plot, report_at_end, write_report  # noqa: F401

if __name__ == "__main__":
    main()
