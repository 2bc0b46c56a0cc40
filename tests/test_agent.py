"""The guest agent client, against the real qemu-ga (run on the host) and scripted fakes.

The host qemu-ga runs with every command that could change the host blocked (clock,
shutdown, suspend, freeze, users, keys): ``set_time`` and ``shutdown`` are only tested
against a fake agent that records what it receives.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox_app.core.errors import GuestError
from sandbox_app.core.guest import AgentDisconnected, ExecResult, GuestAgent
from sandbox_app.core.guest.agent import MAX_LINE

pytestmark = pytest.mark.timeout(30)

BLOCKED = ",".join([
    "guest-set-time", "guest-shutdown", "guest-suspend-disk", "guest-suspend-ram",
    "guest-suspend-hybrid", "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw", "guest-fstrim", "guest-set-user-password", "guest-set-vcpus",
    "guest-set-memory-blocks", "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
])


def run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(scenario())


# -- the real qemu-ga on the host -----------------------------------------------------------


@dataclass
class HostAgent:
    sock: Path
    dir: Path
    pid: int

    def open_fds(self) -> list[str]:
        fd_dir = Path(f"/proc/{self.pid}/fd")
        return [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]


@pytest.fixture
def qga(tmp_path: Path) -> Iterator[HostAgent]:
    # Debian puts qemu-ga in /usr/sbin, off a normal user's PATH.
    exe = shutil.which("qemu-ga", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if exe is None:
        pytest.skip("qemu-ga is not installed (package qemu-guest-agent)")
    sock = tmp_path / "qga.sock"
    proc = subprocess.Popen(
        [exe, "-m", "unix-listen", "-p", str(sock), "-t", str(tmp_path),
         "-f", str(tmp_path / "qga.pid"), "-b", BLOCKED],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert proc.poll() is None, "qemu-ga exited at start-up"
        assert time.monotonic() < deadline, "qemu-ga did not create its socket"
        time.sleep(0.01)
    yield HostAgent(sock, tmp_path, proc.pid)
    proc.terminate()
    proc.wait(5)


def with_agent(qga: HostAgent,
               body: Callable[[GuestAgent], Awaitable[Any]]) -> Any:
    async def scenario() -> Any:
        async with await GuestAgent.open_unix(qga.sock) as agent:
            await agent.sync()
            return await body(agent)
    return run(scenario)


def test_sync_succeeds_on_a_fresh_connection(qga: HostAgent) -> None:
    async def body(agent: GuestAgent) -> None:
        await agent.sync(timeout=2)
    with_agent(qga, body)


def test_wait_ready_returns_the_seconds_waited(qga: HostAgent) -> None:
    async def scenario() -> float:
        async with await GuestAgent.open_unix(qga.sock) as agent:
            return await agent.wait_ready(timeout=5)
    assert 0 <= run(scenario) < 5


def test_ping_is_answered(qga: HostAgent) -> None:
    with_agent(qga, lambda agent: agent.ping())


def test_exec_returns_exit_code_stdout_and_stderr(qga: HostAgent) -> None:
    res = with_agent(qga, lambda a: a.shell("echo out; echo err >&2; exit 3"))
    assert res == ExecResult(exit_code=3, stdout=b"out\n", stderr=b"err\n")


def test_exec_passes_argv_without_a_shell(qga: HostAgent) -> None:
    res = with_agent(qga, lambda a: a.exec(["/bin/echo", "a b", "$HOME"]))
    assert res.stdout == b"a b $HOME\n"


def test_exec_feeds_input_to_stdin(qga: HostAgent) -> None:
    data = bytes(range(256)) * 100
    res = with_agent(qga, lambda a: a.exec(["/bin/cat"], input=data))
    assert (res.exit_code, res.stdout) == (0, data)


def test_exec_sets_the_environment(qga: HostAgent) -> None:
    res = with_agent(qga, lambda a: a.shell('echo "$GREETING"', env=["GREETING=hello"]))
    assert res.stdout == b"hello\n"


def test_exec_reports_a_killing_signal(qga: HostAgent) -> None:
    res = with_agent(qga, lambda a: a.shell("kill -TERM $$"))
    assert (res.signal, res.exit_code) == (15, -15)


def test_exec_of_a_missing_program_raises_guest_error(qga: HostAgent) -> None:
    with pytest.raises(GuestError, match=r"guest-exec: .*No such file"):
        with_agent(qga, lambda a: a.exec(["/nonexistent/program"]))


def test_exec_timeout_raises_and_kills_the_process(qga: HostAgent) -> None:
    pidfile = qga.dir / "sleeper.pid"
    t0 = time.monotonic()
    with pytest.raises(GuestError, match=r"did not finish within 0\.5 s"):
        with_agent(qga, lambda a: a.shell(f"echo $$ > {pidfile}; exec sleep 30", timeout=0.5))
    assert time.monotonic() - t0 < 5
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid):
        assert time.monotonic() < deadline, "the timed-out process is still running"
        time.sleep(0.02)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def test_read_file_is_byte_identical_for_a_multi_mib_file(qga: HostAgent) -> None:
    data = os.urandom(5 << 20 | 12345)
    (qga.dir / "big").write_bytes(data)
    got = with_agent(qga, lambda a: a.read_file(str(qga.dir / "big"), chunk=1 << 20))
    assert got == data


def test_read_file_of_an_empty_file_is_empty(qga: HostAgent) -> None:
    (qga.dir / "empty").write_bytes(b"")
    assert with_agent(qga, lambda a: a.read_file(str(qga.dir / "empty"))) == b""


def test_read_file_of_a_missing_file_raises_with_the_agents_reason(qga: HostAgent) -> None:
    with pytest.raises(GuestError, match=r"guest-file-open: .*No such file or directory"):
        with_agent(qga, lambda a: a.read_file(str(qga.dir / "missing")))


def test_read_file_refuses_more_than_max_bytes(qga: HostAgent) -> None:
    (qga.dir / "f").write_bytes(b"x" * 1000)
    with pytest.raises(GuestError, match="larger than 999 bytes"):
        with_agent(qga, lambda a: a.read_file(str(qga.dir / "f"), max_bytes=999))
    assert with_agent(qga, lambda a: a.read_file(str(qga.dir / "f"), max_bytes=1000)) == \
        b"x" * 1000


def test_read_file_chunks_streams_the_file_chunk_by_chunk(qga: HostAgent) -> None:
    (qga.dir / "f").write_bytes(b"a" * 2500)

    async def body(agent: GuestAgent) -> list[int]:
        return [len(c) async for c in agent.read_file_chunks(str(qga.dir / "f"), 1000)]
    assert with_agent(qga, body) == [1000, 1000, 500]


def test_stopping_a_stream_early_closes_the_guest_file(qga: HostAgent) -> None:
    path = qga.dir / "f"
    path.write_bytes(b"a" * 5000)

    async def body(agent: GuestAgent) -> None:
        async with contextlib.aclosing(agent.read_file_chunks(str(path), 1000)) as chunks:
            async for _ in chunks:
                assert str(path) in qga.open_fds()
                break
        assert str(path) not in qga.open_fds()
    with_agent(qga, body)


def test_write_file_round_trips_several_mib(qga: HostAgent) -> None:
    data = os.urandom(3 << 20 | 777)
    path = qga.dir / "written"
    with_agent(qga, lambda a: a.write_file(str(path), data, chunk=1 << 20))
    assert path.read_bytes() == data
    assert str(path) not in qga.open_fds()


def test_write_file_replaces_the_whole_file(qga: HostAgent) -> None:
    path = qga.dir / "written"
    path.write_bytes(b"old and long content")
    with_agent(qga, lambda a: a.write_file(str(path), b"new"))
    assert path.read_bytes() == b"new"


def test_write_file_of_nothing_creates_an_empty_file(qga: HostAgent) -> None:
    path = qga.dir / "empty"
    with_agent(qga, lambda a: a.write_file(str(path), b""))
    assert path.read_bytes() == b""


def test_an_agent_error_raises_guest_error_with_its_description(qga: HostAgent) -> None:
    with pytest.raises(GuestError, match=r"^guest-set-time: Command guest-set-time has been "
                                         r"disabled$"):
        with_agent(qga, lambda a: a.call("guest-set-time", {"time": 0}))


def test_a_sync_left_unanswered_does_not_confuse_the_next_sync(qga: HostAgent) -> None:
    async def body(agent: GuestAgent) -> None:
        with pytest.raises(GuestError):
            await agent.sync(timeout=0)  # sent, but its answer is never read
        await agent.sync()
        await agent.ping()
    with_agent(qga, body)


def test_a_late_answer_is_not_taken_for_the_next_one(qga: HostAgent) -> None:
    async def body(agent: GuestAgent) -> Any:
        with pytest.raises(GuestError, match="did not answer guest-info within 0 s"):
            await agent.call("guest-info", timeout=0)
        return await agent.call("guest-ping")
    assert with_agent(qga, body) == {}


def test_a_previous_clients_half_request_is_flushed(qga: HostAgent) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(qga.sock))
        s.sendall(b'{"execute": "guest-ping", "arguments": {"x": [')
    with_agent(qga, lambda a: a.ping())


def test_requests_from_concurrent_tasks_each_get_their_own_answer(qga: HostAgent) -> None:
    async def body(agent: GuestAgent) -> list[ExecResult]:
        return await asyncio.gather(*(agent.shell(f"echo {i}") for i in range(8)))
    results = with_agent(qga, body)
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(8)]


def test_requests_after_close_raise_guest_error(qga: HostAgent) -> None:
    async def scenario() -> None:
        agent = await GuestAgent.open_unix(qga.sock)
        await agent.close()
        await agent.close()
        with pytest.raises(GuestError, match="closed"):
            await agent.ping()
    run(scenario)


# -- scripted fakes -------------------------------------------------------------------------


Reply = Callable[[dict[str, Any], asyncio.StreamWriter], Awaitable[None]]


def answer(msg: dict[str, Any], value: Any) -> bytes:
    out = {"return": value, **({"id": msg["id"]} if "id" in msg else {})}
    return json.dumps(out).encode() + b"\n"


@dataclass
class FakeAgent:
    """An agent that answers syncs properly and hands every other request to ``reply``."""

    reply: Reply
    received: list[dict[str, Any]] = field(default_factory=list)
    answer_syncs_after: float = 0.0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while line := await reader.readline():
                msg = json.loads(line.lstrip(b"\xff"))
                self.received.append(msg)
                if msg["execute"] == "guest-sync-delimited":
                    if time.monotonic() - t0 >= self.answer_syncs_after:
                        writer.write(b"\xff" + answer(msg, msg["arguments"]["id"]))
                else:
                    await self.reply(msg, writer)
                await writer.drain()
        writer.close()


async def connect_fake(tmp: Path, fake: FakeAgent) -> tuple[asyncio.Server, GuestAgent]:
    path = tmp / "fake.sock"
    server = await asyncio.start_unix_server(fake.serve, path)
    return server, await GuestAgent.open_unix(path)


def with_fake(tmp: Path, fake: FakeAgent,
              body: Callable[[GuestAgent], Awaitable[Any]]) -> Any:
    async def scenario() -> Any:
        server, agent = await connect_fake(tmp, fake)
        async with server, agent:
            return await body(agent)
    return run(scenario)


def answering(value: Any) -> Reply:
    async def reply(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(answer(msg, value))
    return reply


def test_set_time_sends_the_given_nanoseconds(tmp_path: Path) -> None:
    fake = FakeAgent(answering({}))
    with_fake(tmp_path, fake, lambda a: a.set_time(1_700_000_000_123_456_789))
    assert fake.received[-1]["execute"] == "guest-set-time"
    assert fake.received[-1]["arguments"] == {"time": 1_700_000_000_123_456_789}


def test_set_time_defaults_to_the_host_clock(tmp_path: Path) -> None:
    fake = FakeAgent(answering({}))
    before = time.time_ns()
    with_fake(tmp_path, fake, lambda a: a.set_time())
    assert before <= fake.received[-1]["arguments"]["time"] <= time.time_ns()


def test_shutdown_does_not_wait_for_an_answer(tmp_path: Path) -> None:
    async def silent(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        pass
    fake = FakeAgent(silent)

    async def body(agent: GuestAgent) -> None:
        await agent.shutdown()
        await asyncio.sleep(0.05)
    with_fake(tmp_path, fake, body)
    assert fake.received[-1]["execute"] == "guest-shutdown"
    assert fake.received[-1]["arguments"] == {"mode": "powerdown"}


def test_the_first_request_syncs_first(tmp_path: Path) -> None:
    fake = FakeAgent(answering({}))
    with_fake(tmp_path, fake, lambda a: a.ping())
    assert [m["execute"] for m in fake.received] == ["guest-sync-delimited", "guest-ping"]


def test_garbage_and_answers_to_others_are_skipped(tmp_path: Path) -> None:
    async def noisy(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x00\x01 not json\n[1, 2]\n" + b"[" * 100_000 + b"\n")
        writer.write(b'{"return": "forged", "id": "someone-else"}\n')
        writer.write(b'{"error": {"class": "GenericError", "desc": "stray"}}\n')
        writer.write(answer(msg, "real"))
    assert with_fake(tmp_path, FakeAgent(noisy), lambda a: a.call("guest-info")) == "real"


def test_an_answer_to_an_earlier_sync_does_not_complete_a_later_one(tmp_path: Path) -> None:
    sync_ids: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            sync_ids.append(json.loads(line.lstrip(b"\xff"))["arguments"]["id"])
            if len(sync_ids) == 2:  # answer only the first, and only now: stale
                writer.write(b"\xff" + json.dumps({"return": sync_ids[0]}).encode() + b"\n")

    async def scenario() -> None:
        server = await asyncio.start_unix_server(serve, tmp_path / "fake.sock")
        async with server, await GuestAgent.open_unix(tmp_path / "fake.sock") as agent:
            with pytest.raises(GuestError):
                await agent.sync(timeout=0.1)
            with pytest.raises(GuestError, match=r"did not answer within 0\.3 s"):
                await agent.sync(timeout=0.3)
    run(scenario)


def test_only_garbage_times_out_with_guest_error(tmp_path: Path) -> None:
    async def garbage(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        for _ in range(1000):
            writer.write(b"garbage\n")
    with pytest.raises(GuestError, match=r"did not answer guest-ping within 0\.3 s"):
        with_fake(tmp_path, FakeAgent(garbage), lambda a: a.ping(timeout=0.3))


def test_a_stalled_agent_times_out_with_a_one_line_guest_error(tmp_path: Path) -> None:
    async def stall(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
    t0 = time.monotonic()
    with pytest.raises(GuestError) as info:
        with_fake(tmp_path, FakeAgent(stall), lambda a: a.call("guest-info", timeout=0.3))
    assert time.monotonic() - t0 < 2
    assert str(info.value) == "the guest agent did not answer guest-info within 0.3 s"


def test_an_endless_line_is_dropped_and_the_answer_after_it_counts(tmp_path: Path) -> None:
    async def flood(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        block = b"x" * (1 << 20)
        for _ in range(MAX_LINE // len(block) + 8):
            writer.write(block)
            await writer.drain()
        writer.write(b"\n")
        writer.write(answer(msg, "after"))

    assert with_fake(tmp_path, FakeAgent(flood),
                     lambda a: a.call("guest-info", timeout=20)) == "after"


_BOMB = """
import asyncio, resource, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from test_agent import FakeAgent, answer, with_fake

async def bomb(msg, writer):
    # Just under the line cap of a 2 MiB read, carrying the call's id (the guest sees it).
    head = b'{"id": "' + msg["id"].encode() + b'", "return": ['
    count = ((2 << 20) * 4 // 3 - len(head)) // 3
    writer.write(head + b"{}," * count + b"{}]}\\n")
    writer.write(answer(msg, {"buf-b64": "", "eof": True}))

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    print(with_fake(Path(sys.argv[2]), FakeAgent(bomb), lambda a: a.read_chunk(1, 2 << 20)))
except Exception as exc:
    print(repr(exc))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_line_of_a_million_tiny_objects_is_never_parsed(tmp_path: Path) -> None:
    """``[{},{},…]`` costs ~25 bytes of RAM per input byte to parse (16 MiB: ~400 MiB): a
    line with more containers than any answer has is dropped before ``json.loads``."""
    out = subprocess.run([sys.executable, "-c", _BOMB, str(Path(__file__).parent),
                          str(tmp_path)], capture_output=True, text=True, timeout=60,
                         check=True).stdout.split("\n")
    # Parsing it made the peak grow by ~37 MiB; dropping it unparsed, by ~1.
    assert int(out[1]) < 16_000, f"the peak RSS grew by {int(out[1]) // 1024} MiB"
    assert out[0] == "(b'', True)"


def test_a_small_answer_does_not_accept_a_long_line(tmp_path: Path) -> None:
    """A ping waits for a few bytes: a 1 MiB line carrying its id is dropped unparsed."""
    async def padded(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        big = {"return": "x" * (1 << 20), "id": msg["id"]}
        writer.write(json.dumps(big).encode() + b"\n")
        writer.write(answer(msg, "small"))
    assert with_fake(tmp_path, FakeAgent(padded), lambda a: a.call("guest-info")) == "small"


def test_a_closed_channel_raises_at_once(tmp_path: Path) -> None:
    async def hang_up(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.close()
    t0 = time.monotonic()
    with pytest.raises(AgentDisconnected, match="closed the connection"):
        with_fake(tmp_path, FakeAgent(hang_up), lambda a: a.call("guest-info", timeout=10))
    assert time.monotonic() - t0 < 2


def test_wait_ready_retries_until_a_booting_agent_answers(tmp_path: Path) -> None:
    fake = FakeAgent(answering({}), answer_syncs_after=0.6)

    async def body(agent: GuestAgent) -> float:
        waited = await agent.wait_ready(timeout=10)
        await agent.ping()
        return waited
    assert 0.5 < with_fake(tmp_path, fake, body) < 5
    assert sum(m["execute"] == "guest-sync-delimited" for m in fake.received) > 1


def test_wait_ready_gives_up_after_its_timeout(tmp_path: Path) -> None:
    fake = FakeAgent(answering({}), answer_syncs_after=60)
    with pytest.raises(GuestError, match=r"did not answer within 0\.5 s"):
        with_fake(tmp_path, fake, lambda a: a.wait_ready(timeout=0.5))


def test_wait_ready_fails_at_once_when_the_channel_closes(tmp_path: Path) -> None:
    async def scenario() -> None:
        ours, theirs = socket.socketpair()
        agent = await GuestAgent.from_socket(ours)
        theirs.close()
        t0 = time.monotonic()
        with pytest.raises(AgentDisconnected):
            await agent.wait_ready(timeout=10)
        assert time.monotonic() - t0 < 2
        await agent.close()
    run(scenario)


def test_file_data_beyond_the_requested_count_is_refused(tmp_path: Path) -> None:
    async def liar(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        if msg["execute"] == "guest-file-open":
            writer.write(answer(msg, 1))
        elif msg["execute"] == "guest-file-read":
            data = b"z" * (msg["arguments"]["count"] + 1)
            writer.write(answer(msg, {"count": len(data), "eof": False,
                                      "buf-b64": base64.b64encode(data).decode()}))
        else:
            writer.write(answer(msg, {}))
    fake = FakeAgent(liar)
    with pytest.raises(GuestError, match="more file data than asked"):
        with_fake(tmp_path, fake, lambda a: a.read_file("/x", chunk=100))
    assert fake.received[-1]["execute"] == "guest-file-close"


def test_malformed_exec_output_raises_guest_error(tmp_path: Path) -> None:
    async def bad_exec(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        if msg["execute"] == "guest-exec":
            writer.write(answer(msg, {"pid": 7}))
        else:
            writer.write(answer(msg, {"exited": True, "exitcode": 0, "out-data": "@@@"}))
    with pytest.raises(GuestError, match="malformed command output"):
        with_fake(tmp_path, FakeAgent(bad_exec), lambda a: a.shell("true"))


def test_agent_error_text_is_made_one_line(tmp_path: Path) -> None:
    async def multiline(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        err = {"class": "GenericError", "desc": "line one\nline two\x1b[31m" + "x" * 500}
        writer.write(json.dumps({"error": err, "id": msg["id"]}).encode() + b"\n")
    with pytest.raises(GuestError) as info:
        with_fake(tmp_path, FakeAgent(multiline), lambda a: a.ping())
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert len(str(info.value)) < 250
