"""Fork and resume: run plans and manifests, the local run cache, job scripts.

May import: ``sites``, ``catalogue``, ``compat``, ``read``, ``storage``, ``errors``, ``settings``; never a face.
"""
