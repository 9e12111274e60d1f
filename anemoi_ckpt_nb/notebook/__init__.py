"""Display only: HTML reprs, lineage graph rendering, tag widgets, ``%ckpt`` magics."""
