"""Copies of checkpoints at several sites: the sites of a catalogue, where each copy is, transfer between sites, site-aware fetch, dropping a copy.

May import: ``catalogue``, ``compat``, ``read``, ``storage``, ``errors``, ``settings``; never ``runs`` or a face.
"""
