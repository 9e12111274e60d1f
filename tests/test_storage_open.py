"""open_storage's URL mapping, lazy imports, what is particular to the local and
memory backends, and the progress bar."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anemoi_ckpt_nb.errors import InvalidKeyError, StorageURLError
from anemoi_ckpt_nb.storage import BACKENDS, open_storage
from anemoi_ckpt_nb.storage.local import LocalStorage
from anemoi_ckpt_nb.storage.memory import MemoryStorage, reset


def test_memory_urls_name_process_wide_stores():
    a = open_storage("memory://shared-test")
    b = open_storage("memory://shared-test")
    other = open_storage("memory://other-test")
    a.put("k", b"v")
    assert isinstance(a, MemoryStorage)
    assert b.get("k")[0] == b"v"
    assert not other.exists("k")
    reset("shared-test")
    assert not open_storage("memory://shared-test").exists("k")


def test_paths_and_file_urls_open_local_folders(tmp_path):
    for url in (tmp_path, str(tmp_path), tmp_path.as_uri()):
        storage = open_storage(url)
        assert isinstance(storage, LocalStorage)
        assert storage.root == tmp_path
        assert storage.url == tmp_path.as_uri()


def test_a_storage_is_passed_through(tmp_path):
    storage = open_storage(tmp_path)
    assert open_storage(storage) is storage


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_storage("cat").root == tmp_path / "cat"


def test_s3_urls_name_bucket_and_prefix():
    storage = open_storage("s3://bucket/some/prefix/", endpoint_url="http://x:1", profile="p")
    assert (storage.bucket, storage.prefix) == ("bucket", "some/prefix")
    assert storage.url == "s3://bucket/some/prefix"
    assert (storage.endpoint_url, storage.profile) == ("http://x:1", "p")
    assert open_storage("s3://bucket").url == "s3://bucket"


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "gs://bucket/x", "file://host/p"])
def test_bad_urls_are_refused_with_a_hint(url):
    with pytest.raises(StorageURLError) as err:
        open_storage(url)
    assert err.value.hint


def test_a_missing_backend_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(BACKENDS, "s3", ("no_such_module_for_test:S3Storage", "pip install boto3"))
    with pytest.raises(StorageURLError, match="needs a package that is missing") as err:
        open_storage("s3://bucket/x")
    assert err.value.hint == "pip install boto3"


def test_only_the_s3_backend_imports_boto3():
    code = (
        "import sys\n"
        "from anemoi_ckpt_nb.storage import open_storage\n"
        "open_storage('memory://x').put('k', b'v')\n"
        "open_storage(sys.argv[1]).put('k', b'v')\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'imported'\n"
        "open_storage('s3://bucket/p')\n"
        "assert 'boto3' in sys.modules\n"
    )
    folder = Path(os.environ.get("XDG_DATA_HOME", "/tmp")) / "lazy"
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)


# --- local folder specifics ---------------------------------------------------------


def test_local_objects_are_plain_files_and_helpers_stay_hidden(tmp_path):
    storage = open_storage(tmp_path / "cat")
    storage.put("records/a.json", b"{}", if_absent=True)
    storage.replace("records/a.json", b"{ }", etag=storage.stat("records/a.json").etag)
    assert (tmp_path / "cat" / "records" / "a.json").read_bytes() == b"{ }"
    assert (tmp_path / "cat" / ".locks").is_dir()
    leftovers = [p.name for p in (tmp_path / "cat" / "records").iterdir()]
    assert leftovers == ["a.json"]  # no temporary left behind
    assert [i.key for i in storage.list()] == ["records/a.json"]


def test_local_etag_follows_changes_made_outside_the_storage(tmp_path):
    storage = open_storage(tmp_path)
    etag = storage.put("k", b"aaaa")
    path = tmp_path / "k"
    with open(path, "r+b") as f:  # same inode, same size: only the cached hash could lie
        f.write(b"bbbb")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert storage.stat("k").etag != etag
    assert storage.stat("k").etag == storage.get("k")[1]


def test_local_key_below_an_object_is_refused(tmp_path):
    storage = open_storage(tmp_path)
    storage.put("a", b"x")
    with pytest.raises(InvalidKeyError, match="parent of this key is an object"):
        storage.put("a/b", b"y")
    assert storage.get("a")[0] == b"x"
    assert not storage.exists("a/b")


def test_local_folder_keys_are_not_objects(tmp_path):
    storage = open_storage(tmp_path)
    storage.put("records/a.json", b"{}")
    assert not storage.exists("records")
    storage.delete("records")  # a folder is not an object: nothing happens
    assert storage.exists("records/a.json")


# --- progress bar -------------------------------------------------------------------


def test_progress_bar_counts_resumed_and_fetched_bytes(tmp_path):
    from anemoi_ckpt_nb.storage.progress import progress_bar, resumed_bytes

    data = os.urandom(100_000)
    storage = open_storage(tmp_path / "store")
    source = tmp_path / "f.bin"
    source.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    storage.upload_file("blobs/f", source, sha256=sha)
    dest = tmp_path / "out.bin"
    (tmp_path / "out.bin.part").write_bytes(data[:30_000])
    assert resumed_bytes(dest) == 30_000
    initial = resumed_bytes(dest)
    with progress_bar(len(data), desc="download", initial=initial, disable=False) as update:
        storage.download_file("blobs/f", dest, sha256=sha, progress=update)
        assert update.__self__.n == len(data)
    assert resumed_bytes(dest) == 0
