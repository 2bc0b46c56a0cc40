"""The one place where asyncio meets Qt (through qasync).

Core operations are coroutines. The GUI runs each as a ``Job``: a QObject owning one named
asyncio task, kept strongly referenced by a ``JobRunner`` until it ends, that reports progress,
its result and user-facing errors as Qt signals. Widgets and the app controller only see
signals; no other GUI module imports asyncio or qasync.

``BlankSlateError`` becomes ``failed(message)`` (one line for a dialog); anything else is a
bug: logged with its traceback, shown as one line.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import qasync
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication

from ..core.errors import BlankSlateError

log = logging.getLogger(__name__)
T = TypeVar("T")

CANCELLED = "cancelled"
"""The ``failed`` message of a cancelled job (the app shows no dialog for it)."""


class Job(QObject):
    """One long operation. Subclasses implement ``work()``; start with ``JobRunner.submit``.

    Signals: ``progress(phase, percent or -1)``, ``finished(result)``, ``failed(message)``,
    and ``ended()`` after either.
    """

    progress = Signal(str, int)
    finished = Signal(object)
    failed = Signal(str)
    ended = Signal()

    cancellable = False
    """Only jobs whose core coroutine cleans up on cancellation say True."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._task: asyncio.Task[None] | None = None

    async def work(self) -> object:
        raise NotImplementedError

    def report(self, phase: str, fraction: float | None) -> None:
        """A core ``Progress`` callback that forwards to the ``progress`` signal."""
        self.progress.emit(phase, -1 if fraction is None else round(fraction * 100))

    def cancel(self) -> bool:
        """Ask the job to stop; False if this job cannot be cancelled safely or has ended."""
        if not self.cancellable or self._task is None or self._task.done():
            return False
        self._task.cancel()
        return True

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def _start(self) -> asyncio.Task[None]:
        self._task = asyncio.ensure_future(self._run())
        self._task.set_name(self.name)
        return self._task

    async def _run(self) -> None:
        try:
            result = await self.work()
        except asyncio.CancelledError:
            self.failed.emit(CANCELLED)
            self.ended.emit()
            raise
        except BlankSlateError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # a bug: keep the traceback in the log, show one line
            log.exception("job %s failed", self.name)
            self.failed.emit(f"internal error: {exc}")
        else:
            self.finished.emit(result)
        self.ended.emit()


class FunctionJob(Job):
    """A job around a coroutine function taking the job (for its ``report`` callback)."""

    def __init__(self, name: str, fn: Callable[[Job], Coroutine[Any, Any, object]]) -> None:
        super().__init__(name)
        self._fn = fn

    async def work(self) -> object:
        return await self._fn(self)


class JobRunner(QObject):
    """Holds every running job (asyncio keeps only weak references to tasks)."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[Job, asyncio.Task[None]] = {}

    def submit(self, job: Job) -> Job:
        task = job._start()
        self._jobs[job] = task
        task.add_done_callback(lambda _t: self._forget(job))
        self.changed.emit()
        return job

    def _forget(self, job: Job) -> None:
        self._jobs.pop(job, None)
        self.changed.emit()

    def running(self) -> list[Job]:
        return list(self._jobs)

    def find(self, name: str) -> Job | None:
        return next((j for j in self._jobs if j.name == name), None)

    async def wait_all(self, *, ignore: type[Job] | None = None) -> None:
        """Wait for every job (but those of type ``ignore``) to end, e.g. before quitting."""
        while tasks := [t for j, t in self._jobs.items()
                        if ignore is None or not isinstance(j, ignore)]:
            await asyncio.gather(*tasks, return_exceptions=True)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking core work (e.g. a secure erase) off the GUI thread."""
    return await asyncio.to_thread(fn, *args)


def create_qapplication(argv: list[str]) -> QApplication:
    """The process's QApplication (reused if one exists, as under pytest-qt)."""
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    return QApplication(argv)


class _GuiThreadGc(QObject):
    """Python's cyclic garbage collector, run in the GUI thread only.

    Left automatic, it runs in whichever thread happens to allocate when a threshold is
    crossed — here, often a worker of ``asyncio.to_thread`` — and a Qt object in a collected
    cycle (an old window, an app with its timers) is then destroyed off the GUI thread: a
    crash later, far from the cause. As Anki does: automatic collection off, the same
    generational thresholds checked on a GUI-thread timer.
    """

    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self.thresholds = gc.get_threshold()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.setInterval(500)
        self.timer.timeout.connect(self.check)
        self.timer.start()

    def check(self) -> None:
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self.thresholds[generation]:
                gc.collect(generation)
                return


def install_loop(app: QApplication) -> asyncio.AbstractEventLoop:
    """A qasync loop driving ``app``, set as the current asyncio loop (the app and tests);
    from now on garbage is collected in the GUI thread only (``_GuiThreadGc``)."""
    if app.findChild(_GuiThreadGc) is None:
        _GuiThreadGc(app)
    loop: asyncio.AbstractEventLoop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    return loop


def run(app: QApplication, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main()`` on a qasync loop driving ``app``; return its exit code."""
    loop = install_loop(app)
    try:
        code = _run_to_end(loop, main())
    finally:
        loop.close()
    return code


def complete(coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    """Run ``coro`` to its end on the current qasync loop (Qt keeps processing events).

    For tests and start-up code outside any coroutine; never call it from inside a job.
    Not ``loop.run_until_complete``: qasync's processes Qt events once more after it has
    cleared the running loop, and a background task stepping then dies with "no running
    event loop" (seen in CI: a spare overlay that was never prepared).
    """
    return _run_to_end(asyncio.get_event_loop(), asyncio.wait_for(coro, timeout))


def _run_to_end(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    task = loop.create_task(coro)
    task.add_done_callback(lambda _: loop.stop())
    while not task.done():
        loop.run_forever()
    return task.result()


def on_signals(signals: tuple[signal.Signals, ...], handler: Callable[[], None]) -> None:
    """Call ``handler`` on the loop when one of ``signals`` arrives (not in a Qt slot)."""
    loop = asyncio.get_event_loop()
    for sig in signals:
        loop.add_signal_handler(sig, handler)


class QuitLatch:
    """Something ``main`` can await until the user quits (tray, launcher, last window)."""

    def __init__(self) -> None:
        self._future: asyncio.Future[int] = asyncio.get_event_loop().create_future()

    def release(self, code: int = 0) -> None:
        if not self._future.done():
            self._future.set_result(code)

    async def wait(self) -> int:
        return await self._future


def stderr_excepthook() -> None:
    """Qt swallows exceptions raised in slots; log them like any other bug."""

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        log.error("unhandled exception", exc_info=(kind, value, tb))

    sys.excepthook = hook
