"""Deprecated: the flat ``core`` package of 0.1, split in 0.2 into ``read``, ``conversion``, ``catalogue``, ``sites``, ``runs`` and ``compat``.

Its old module paths still import, with a DeprecationWarning (see :mod:`anemoi_ckpt_nb._moved`).
"""

import warnings

warnings.warn(
    "anemoi_ckpt_nb.core is deprecated: its modules moved to anemoi_ckpt_nb.read, .conversion, .catalogue, .sites, "
    ".runs and .compat; the old paths work until the next release",
    DeprecationWarning,
    stacklevel=2,
)
