"""Does a checkpoint fit this code: metadata models per version, migration steps, validation, upgrade, code-version capture and drift.

May import: ``read``, ``storage``, ``errors``; never ``catalogue`` or above (the catalogue registers its own documents here).
"""
