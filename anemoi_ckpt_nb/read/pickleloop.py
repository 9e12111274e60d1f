"""The restricted unpickler's opcode loop over a pickle held in memory (issue 16: ``inspect`` start-up).

``pickle._Unpickler.load`` reads each opcode through ``file.read(1)`` and calls its handler, which
reads its argument through ``file.read`` again: two to four calls an opcode, most of the time it
takes to read anemoi's pickles (thousands of memo puts and gets, small ints and strings). Here the
pickle's bytes are indexed directly and the commonest opcodes that only push a constant or touch
the memo are done in the loop, exactly as their stock handlers do them. Every other opcode goes
to the unpickler's own handler, so every check of :class:`~.unpickler.RestrictedUnpickler` (calls,
state, items, tuples, globals, persistent ids) runs as it does in the stock loop: handlers without
an argument are called as they are, the others with the file positioned at their argument and
the position taken back after. From a ``FRAME`` opcode on (protocol 4 and later, which torch.save
does not write) reading is the unframer's, the stock loop's.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

#: Opcodes without an argument in the stream (pickletools: ``arg is None``), whose handlers never
#: read the file: called without moving the file's position. STOP is not among them: after it the
#: file must be positioned just past the pickle (a legacy torch file goes on reading there).
NO_ARGUMENT = frozenset(b"()012NQR]abdelostu}\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98")

_BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET = b"q"[0], b"r"[0], b"h"[0], b"j"[0]
_BININT1, _BININT2, _BININT = b"K"[0], b"M"[0], b"J"[0]
_BINUNICODE, _SHORT_BINUNICODE = b"X"[0], b"\x8c"[0]
_FRAME = pickle.FRAME[0]
_U32, _U16, _I32 = struct.Struct("<I").unpack_from, struct.Struct("<H").unpack_from, struct.Struct("<i").unpack_from


def run(unpickler: Any, file: Any) -> Any:
    """``pickle._Unpickler.load`` for ``unpickler``, reading straight from ``file`` until a ``FRAME`` opcode.

    The stock loop reads through ``pickle._Unframer``, a Python call a read, needed only from a
    protocol 4 frame on (the unpickler's ``load_frame`` then hands reading to it); torch.save
    writes protocol 2. A pickle in memory goes through :func:`load_in_memory`.
    """
    unpickler._unframer = pickle._Unframer(unpickler._file_read, unpickler._file_readline)
    unpickler.read, unpickler.readline = unpickler._file_read, unpickler._file_readline
    unpickler.readinto = unpickler._unframer.readinto  # passes on too (only BYTEARRAY8's stock handler uses it)
    unpickler.metastack = []
    unpickler.stack = []
    unpickler.append = unpickler.stack.append
    unpickler.proto = 0
    if type(file) is io.BytesIO:  # a pickle in memory (a torch zip's data.pkl)
        return load_in_memory(unpickler, file)
    dispatch = unpickler.dispatch
    try:
        while True:
            key = unpickler.read(1)  # not a local: load_frame changes it
            if not key:
                raise EOFError
            dispatch[key[0]](unpickler)
    except pickle._Stop as stop:
        return stop.value


def load_in_memory(unpickler: Any, file: Any) -> Any:
    """Run ``unpickler`` (set up as ``pickle._Unpickler.load`` sets it up) over ``file``, an ``io.BytesIO``.

    Raises:
        whatever the stock loop raises for the same bytes (``EOFError`` at the end of the data,
        ``UnpicklingError`` for a missing memo entry, the handlers' own errors).
    """
    data = file.getvalue()  # the BytesIO's own bytes object, not a copy
    pos = file.tell()
    memo = unpickler.memo
    dispatch = unpickler.dispatch
    seek, tell = file.seek, file.tell
    try:
        while True:
            try:
                op = data[pos]
            except IndexError:
                raise EOFError from None
            if op in NO_ARGUMENT:
                pos += 1
                dispatch[op](unpickler)
            elif op == _LONG_BINPUT:
                (i,) = _U32(data, pos + 1)
                if i > sys.maxsize:
                    raise ValueError("negative LONG_BINPUT argument")
                memo[i] = unpickler.stack[-1]
                pos += 5
            elif op == _BINPUT:
                memo[data[pos + 1]] = unpickler.stack[-1]
                pos += 2
            elif op == _LONG_BINGET or op == _BINGET:
                if op == _BINGET:
                    i = data[pos + 1]
                    pos += 2
                else:
                    (i,) = _U32(data, pos + 1)
                    pos += 5
                try:
                    unpickler.append(memo[i])
                except KeyError:
                    raise pickle.UnpicklingError(f"Memo value not found at index {i}") from None
            elif op == _BININT1:
                unpickler.append(data[pos + 1])
                pos += 2
            elif op == _BININT2:
                unpickler.append(_U16(data, pos + 1)[0])
                pos += 3
            elif op == _BININT:
                unpickler.append(_I32(data, pos + 1)[0])
                pos += 5
            elif op == _BINUNICODE or op == _SHORT_BINUNICODE:
                if op == _BINUNICODE:
                    (n,) = _U32(data, pos + 1)
                    pos += 5
                    if n > sys.maxsize:
                        raise pickle.UnpicklingError(f"BINUNICODE exceeds system's maximum size of {sys.maxsize} bytes")
                else:
                    n = data[pos + 1]
                    pos += 2
                unpickler.append(str(data[pos : pos + n], "utf-8", "surrogatepass"))
                pos += n
            elif op == _FRAME:
                seek(pos + 1)
                dispatch[op](unpickler)  # reading is the unframer's from here: the stock loop goes on
                read = unpickler.read
                while True:
                    key = read(1)
                    if not key:
                        raise EOFError
                    dispatch[key[0]](unpickler)
            else:  # an opcode with an argument: its handler reads it from the file
                seek(pos + 1)
                dispatch[op](unpickler)
                pos = tell()
    except pickle._Stop as stop:
        return stop.value
