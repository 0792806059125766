"""Whether the Hugging Face hub can be reached, asked once before a hub id is used.

Without a route to the hub, huggingface_hub retries each request with back-off (about
30 s and a screen of warnings for one data set) before the error. A first request with a
short time limit tells instead: if it gets no answer, the process switches to offline
mode, as `HF_HUB_OFFLINE=1` would, so that what is in the local cache still loads and
what is not fails at once. Only a hub id asks; runs on local paths never touch the
network.
"""

from __future__ import annotations

import functools
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request

PROBE_TIMEOUT_S = 2.0


def answers(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a server answers a HEAD request to `url` within `timeout` seconds (any HTTP
    status counts: the hub is there). Name resolution is inside the limit too."""
    answered = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)
        except urllib.error.URLError as exc:
            # A TLS failure means a server answered; the hub's own client, with its
            # certificate settings, is the one to decide.
            answered.append(isinstance(exc.reason, ssl.SSLError))
        except OSError:
            answered.append(False)

    # getaddrinfo ignores the socket timeout: a thread bounds a hanging DNS lookup too.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


@functools.cache
def unreachable() -> str | None:
    """None if the hub can be used; otherwise why not, after switching this process (and
    the processes it starts) to offline mode, where the libraries read their cache and
    never retry."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if answers(constants.ENDPOINT):
        return None
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True  # what huggingface_hub and transformers consult on each request
    datasets_config = sys.modules.get("datasets.config")  # read from the environment when imported later
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = True
    return f"{constants.ENDPOINT} did not answer within {PROBE_TIMEOUT_S:g} s"


def failure(key: str, what: str, exc: BaseException, offline: str | None, local: str) -> str:
    """The one line for a hub id `what` (from config `key`) that could not be loaded: which
    key to set to a `local` path instead."""
    if offline is not None:
        problem = f"{what} is not in the local Hugging Face cache and the hub is offline ({offline})"
    else:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        problem = f"cannot load {what} from the Hugging Face hub ({first})"
    return f"{key}: {problem}; pass a local path instead: {key}=<{local}>"
