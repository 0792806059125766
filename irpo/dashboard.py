"""`python -m irpo.dashboard`: the W&B workspace, built in irpo/analysis/dashboard.py."""

from irpo.analysis.dashboard import build, main, spec  # noqa: F401

if __name__ == "__main__":
    main()
