"""Display only: HTML and text views, the lineage graph and its rendering, tag and convert widgets.

May import: the decision packages (``catalogue``, ``read``, ...) and ``errors``; never ``api`` at run time (it is handed the objects it shows) nor ``cli``.
"""
