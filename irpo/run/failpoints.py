"""Named points where a test can kill or signal the process, to prove that a crash or a stop
there loses nothing.

`IRPO_FAILPOINT=<name>` sends this process SIGKILL when the code reaches the point `<name>`
(no cleanup runs, as on a preempted node), or the signal `IRPO_FAILPOINT_SIGNAL` names
(`SIGTERM`, `SIGUSR1`, ...: a stop, irpo.run.preemption). Under a launcher every rank reaches
the point, as srun signals every task. Unset, a failpoint is one dict lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("IRPO_FAILPOINT") == name:
        os.kill(os.getpid(), getattr(signal, os.environ.get("IRPO_FAILPOINT_SIGNAL", "SIGKILL")))
