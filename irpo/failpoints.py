"""Named points where a test can kill the process, to prove that a crash there loses nothing.

`IRPO_FAILPOINT=<name>` sends SIGKILL to this process when the code reaches the point
`<name>` (no cleanup runs, as on a preempted node). Unset, a failpoint is one dict lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("IRPO_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
