"""Run a child process of root held to the file permission bits, like any user.

CI runs the tests as root, who may read and write anything; tests of "permission
denied" run their subject in a child that has dropped root's power over
permissions, so that the refusal is real there too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import pytest

#: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER: what lets root ignore permissions and ownership.
_CAPABILITIES = (1, 2, 3)
_PR_CAPBSET_DROP = 24


def _drop_root_powers() -> None:
    """Run in the child before exec: drop the capabilities from the bounding set.

    Dropped from the bounding set, they stay dropped across exec. Switching to
    "nobody" instead would not do: it could not even run this Python, which may
    live under root's private home.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in _CAPABILITIES:
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def held_to_permissions() -> Callable[[], None] | None:
    """The ``preexec_fn`` for ``subprocess.run`` that holds a child to the permission bits.

    Returns:
        None when this process is not root (its children obey permissions anyway).
        Skips the test when it is root on a system other than Linux.
    """
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return None
    if not sys.platform.startswith("linux"):
        pytest.skip("dropping root's capabilities is done the Linux way")
    return _drop_root_powers
