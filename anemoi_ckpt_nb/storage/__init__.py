"""Storage backends behind one small interface (see :mod:`.base`)."""
