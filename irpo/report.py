"""`python -m irpo.report <run or sweep dir>`, and `irpo.report` as notebooks, scripts and the
Hydra callback of earlier runs' records (`irpo.report.ReportCallback`) name it: the report
now lives in irpo/analysis/."""

from irpo.analysis.report import (  # noqa: F401
    FIGURES,
    ReportCallback,
    accuracy_figure,
    describe,
    logps_figure,
    main,
    moving_average,
    plot,
    report_at_end,
    train_figure,
    write_report,
)

if __name__ == "__main__":
    main()
