"""Safe reading of checkpoint files: archive formats, the restricted unpickler, the class translation table, embedded metadata, the reader.

May import: ``anemoi_ckpt_nb.errors`` and ``anemoi_ckpt_nb.storage`` only (torch, numpy, safetensors inside functions).
"""
