"""The zip and S3 CRC-32, as fast as this machine has it.

One choice for every caller that CRCs many bytes: a conversion (each weight is CRC'd when
written and when read back) and an S3 upload (each part's ``x-amz-checksum-crc32``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable


def _crc32_function() -> Callable[..., int]:
    """ISA-L's CRC-32 (about 20 GB/s with carry-less multiply) when installed, else zlib's (4 GB/s).

    Both compute the same CRC-32 (the zip, gzip and S3 polynomial). On a machine where one core
    does all the work, or whose cores an S3 server shares, the difference is time.
    """
    try:
        from isal.isal_zlib import crc32
    except ImportError:  # isal has no wheel for this platform: the standard library's
        return zlib.crc32
    return crc32


crc32 = _crc32_function()
