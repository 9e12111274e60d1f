"""Training checkpoint -> inference checkpoint: the plan of one conversion, the writers per format, many at once, the output files, the model loader and the anemoi-inference runner that runs them.

May import: ``read``, ``storage``, ``errors``.
"""
