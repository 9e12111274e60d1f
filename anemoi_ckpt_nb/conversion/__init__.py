"""Training checkpoint -> inference checkpoint: the plan of one conversion, the writers per format, many at once, the output files.

May import: ``read``, ``storage``, ``errors``.
"""
