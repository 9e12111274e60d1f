"""An upload to S3 proves that the bytes it sends hash to the sha256 they are stored under; it does not
take the file's remembered sha256 (storage/hashing.py) for proof, on a real SeaweedFS server.

The remembered hash is believed while the file's size and modification time hold; a file rewritten
with the same size and its old modification time put back keeps a hash that lies. Registering it
must then be refused, with nothing left on the server, as must a file changed while it is sent
(docs/storage.md, "What checks the bytes")."""

from __future__ import annotations

import os

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.errors import IntegrityError
from anemoi_ckpt_nb.storage import open_storage
from anemoi_ckpt_nb.storage.hashing import cached_sha256, sha256_of

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


def _open_uploads(server, prefix: str) -> list[dict]:
    return server.client().list_multipart_uploads(Bucket=server.bucket, Prefix=prefix).get("Uploads", [])


def _rewrite_keeping_size_and_mtime(path, offset: int) -> None:
    """Flip one byte in place, then put the modification time back, to the nanosecond."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_registering_a_file_whose_remembered_hash_lies_is_refused_and_leaves_nothing(s3_env, s3_url, tmp_path):
    source = examples.write_training_checkpoint(tmp_path / "last.ckpt", weights_bytes=7_000_000)
    remembered = sha256_of(source.path)  # hashed once and remembered, as any earlier command does
    with open(source.path, "rb") as f:
        if cached_sha256(f.fileno()) != remembered:
            pytest.skip("the file system keeps no user extended attributes")
    size = os.stat(source.path).st_size
    assert size > 16 * MiB  # more than one part of the catalogue's storage: a multipart upload
    _rewrite_keeping_size_and_mtime(source.path, size // 2)  # in the tensors' bytes: still readable
    with open(source.path, "rb") as f:
        assert cached_sha256(f.fileno()) == remembered  # the remembered hash now lies
    catalogue = Catalogue.create(s3_url)

    with pytest.raises(IntegrityError, match=f"hashes to [0-9a-f]{{64}}, expected {remembered}; nothing stored"):
        catalogue.register(source.path)
    assert list(catalogue.store.storage.list("records/")) == []
    assert list(catalogue.store.storage.list("blobs/sha256/" + remembered)) == []
    assert _open_uploads(s3_env, s3_url.split("/", 3)[3]) == []


@pytest.mark.parametrize("mtime_put_back", [False, True], ids=["plain-write", "mtime-put-back"])
def test_a_file_changed_between_parts_is_refused_and_leaves_nothing(s3_env, s3_url, tmp_path, mtime_put_back):
    """Changed while it is sent: what was sent is not what was hashed, whether or not the file's
    modification time moved, and although the file remembers the hash it was sent under."""
    storage = open_storage(s3_url, part_size=5 * MiB, max_concurrency=1)
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(16 * MiB))  # parts of 5, 5, 5 and 1 MiB
    sha = sha256_of(path)  # remembered (where the file system keeps extended attributes)
    sent: list[int] = []

    def change_a_later_part(nbytes: int) -> None:
        if not sent:  # the first part is stored and the second read: change the fourth
            if mtime_put_back:
                _rewrite_keeping_size_and_mtime(path, 15 * MiB + 7)
            else:
                with open(path, "r+b") as f:
                    f.seek(15 * MiB + 7)
                    f.write(b"changed")
        sent.append(nbytes)

    with pytest.raises(IntegrityError, match=f"expected {sha}; nothing stored"):
        storage.upload_file("blobs/x", path, sha256=sha, progress=change_a_later_part)
    assert len(sent) == 4  # every part went, and the check at the end refused them
    assert _open_uploads(s3_env, storage.prefix) == []
    assert not storage.exists("blobs/x")
