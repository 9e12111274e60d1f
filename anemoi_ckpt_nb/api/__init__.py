"""The public objects: :class:`Catalogue` and :class:`Checkpoint`, thin faces that delegate to the packages below, and :func:`convert_many`.

May import: every package below it (``notebook`` to display, ``runs``, ``sites``, ``catalogue``, ``conversion``, ``compat``, ``read``, ``storage``, ``errors``, ``settings``); never ``cli``.
"""

from anemoi_ckpt_nb.api.batch import ConvertReport, convert_many
from anemoi_ckpt_nb.api.catalogue import Catalogue
from anemoi_ckpt_nb.api.checkpoint import Checkpoint, checkpoint_line
from anemoi_ckpt_nb.api.opening import ENV_CATALOGUE, default_url

__all__ = ["ENV_CATALOGUE", "Catalogue", "Checkpoint", "ConvertReport", "checkpoint_line", "convert_many", "default_url"]
