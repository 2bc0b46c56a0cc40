"""A session's window: the guest's screen inside a thick frame in the context's color.

The context's name is always visible (title, a colored label above the screen) so the user
never types into the wrong context. Closing the window asks how to end the session.

Files and clipboard: a Downloads panel (dock), Send file… and drops of host files, and two
clipboard actions (Ctrl+Shift+V: host clipboard into the guest; Ctrl+Shift+C: guest
clipboard to the host), greyed out, with the reason, when the context's policy or the image
does not allow them. Nothing is copied unless the user asks.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QMimeData, QSettings, QSize, Qt
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QDockWidget,
    QFrame,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.contexts import DEFAULT_SEARCH
from ..core.guest import ClipboardPolicy, refusal, rfb
from ..core.images import Recipe
from ..core.session import address_to_url
from ..core.vm import TCG_WARNING
from .asyncbridge import Job
from .display import ALT, CTRL, DELETE, RELEASE_HINT, VmDisplay, function_key
from .downloads_panel import DownloadsPanel
from .signals import AppSignals
from .widgets import text_color

FRAME_WIDTH = 8


def local_files(mime: QMimeData) -> list[Path]:
    """The host files a drag carries; empty unless every item is a local file."""
    urls = mime.urls() if mime.hasUrls() else []
    if not urls or not all(u.isLocalFile() for u in urls):
        return []
    return [Path(u.toLocalFile()) for u in urls]


class SessionWindow(QMainWindow):
    """One running session; toolbar: Quick reset, Stop, clipboard, Send file…, Downloads."""

    def __init__(self, context: str, color: str, client: rfb.RfbClient, signals: AppSignals,
                 *, tcg: bool = False, recipe: Recipe | None = None,
                 clipboard: ClipboardPolicy = ClipboardPolicy.HOST_TO_GUEST,
                 search: str = DEFAULT_SEARCH, window_state: QSettings | None = None) -> None:
        super().__init__()
        self.window_state = window_state  # where its size and position are remembered
        self.search = search
        self.context = context
        self.signals = signals
        self._closing_for_real = False
        self._busy = False
        self.setWindowTitle(f"{context} — Blank Slate")
        self.display = VmDisplay(client)
        fg = text_color(color)
        self.label = QLabel(f"{context}" + ("   ⚠ software emulation (no KVM)" if tcg else ""))
        self.label.setObjectName("contextLabel")
        self.label.setToolTip(TCG_WARNING if tcg else f"Everything here runs in “{context}”")
        self.label.setStyleSheet(
            f"background:{color}; color:{fg}; font-weight:bold; padding:4px 8px;")
        self.frame = QFrame()
        self.frame.setObjectName("sessionFrame")
        self.frame.setStyleSheet(
            f"#sessionFrame {{ border: {FRAME_WIDTH}px solid {color}; background: black; }}")
        inner = QVBoxLayout(self.frame)
        inner.setContentsMargins(FRAME_WIDTH, FRAME_WIDTH, FRAME_WIDTH, FRAME_WIDTH)
        inner.addWidget(self.display)
        self.warning_bar = QLabel("")
        self.warning_bar.setObjectName("sessionWarnings")
        self.warning_bar.setWordWrap(True)
        self.warning_bar.setStyleSheet("background:#fff3cd; color:#664d03; padding:4px 8px;")
        self.warning_bar.setVisible(False)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.label)
        layout.addWidget(self.warning_bar)
        layout.addWidget(self.frame)
        self.setCentralWidget(body)
        bar = QToolBar("Session")
        bar.setMovable(False)
        self.reset_action = QAction("Quick reset", self)
        self.reset_action.setToolTip("Throw this session away and continue on a clean one")
        self.reset_action.triggered.connect(lambda: signals.quick_reset_requested.emit(context))
        self.suspend_action = QAction("Suspend", self)
        self.suspend_action.setToolTip("Save this session as it is and close it: the next "
                                       "start of the context resumes it")
        self.suspend_action.triggered.connect(lambda: signals.suspend_requested.emit(context))
        bar.addAction(self.suspend_action)
        self.stop_action = QAction("Stop", self)
        self.stop_action.setToolTip("End this session: keep or discard its changes")
        self.stop_action.triggered.connect(lambda: signals.stop_requested.emit(context))
        bar.addAction(self.reset_action)
        bar.addAction(self.stop_action)
        bar.addSeparator()
        self.address: QLineEdit | None = None
        if recipe is not None and recipe.open_url_command:
            self._add_address_bar(bar)
        self._add_transfer_actions(bar, recipe, clipboard)
        bar.addSeparator()
        self._add_view_actions(bar)
        self.addToolBar(bar)
        self.setAcceptDrops(True)
        self.grab_hint = QLabel(RELEASE_HINT)
        self.grab_hint.setVisible(False)
        self.statusBar().addPermanentWidget(self.grab_hint)
        self.display.grab_changed.connect(self.grab_hint.setVisible)
        # Start at the guest's own size, so nothing is scaled until the user resizes.
        self.display.set_preferred(QSize(client.width, client.height))
        self.adjustSize()
        self._restore_geometry()

    # ------------------------------------------------------------------ view

    def _add_view_actions(self, bar: QToolBar) -> None:
        """Full screen (F11) and the Send keys menu (chords the host would take itself)."""
        self.fullscreen_action = QAction("Full screen", self)
        self.fullscreen_action.setCheckable(True)
        self.fullscreen_action.setShortcut(QKeySequence("F11"))
        self.fullscreen_action.setToolTip("Full screen (F11)")
        self.fullscreen_action.triggered.connect(self.toggle_full_screen)
        bar.addAction(self.fullscreen_action)
        self.send_keys_menu = QMenu("Send keys", self)
        self.send_keys_menu.setObjectName("sendKeys")
        chords = [("Ctrl+Alt+Del", [CTRL, ALT, DELETE])] + [
            (f"Ctrl+Alt+F{n}", [CTRL, ALT, function_key(n)]) for n in range(1, 13)]
        for label, keys in chords:
            action = self.send_keys_menu.addAction(label)
            action.triggered.connect(lambda _c=False, k=keys: self.display.send_chord(k))
        button = QToolButton()
        button.setText("Send keys")
        button.setMenu(self.send_keys_menu)
        button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        bar.addWidget(button)

    def toggle_full_screen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
        else:
            self.showFullScreen()
        self.fullscreen_action.setChecked(self.isFullScreen())

    def _geometry_key(self) -> str:
        return f"session/{self.context}/geometry"

    def _restore_geometry(self) -> None:
        if self.window_state is None:
            return
        saved = self.window_state.value(self._geometry_key())
        if isinstance(saved, QByteArray) and not saved.isEmpty():
            self.restoreGeometry(saved)

    def save_geometry(self) -> None:
        """Remember this context's window size and position (not full screen's)."""
        if self.window_state is not None and not self.isFullScreen():
            self.window_state.setValue(self._geometry_key(), self.saveGeometry())
            self.window_state.sync()

    def set_warnings(self, warnings: list[str]) -> bool:
        """Show what the session warns about under the context label; True if it changed."""
        text = "\n".join(f"⚠ {w}" for w in warnings)
        if text == self.warning_bar.text():
            return False
        self.warning_bar.setText(text)
        self.warning_bar.setVisible(bool(text))
        return True

    def _add_address_bar(self, bar: QToolBar) -> None:
        """The kiosk browser has no address bar of its own: this one opens pages in it."""
        self.address = QLineEdit()
        self.address.setObjectName("addressBar")
        self.address.setPlaceholderText("Search, or open an address in this session (Ctrl+L)")
        self.address.setClearButtonEnabled(True)
        self.address.setMinimumWidth(280)
        self.address.returnPressed.connect(self._open_address)
        bar.addWidget(self.address)
        focus = QAction("Address bar", self)
        focus.setShortcut(QKeySequence("Ctrl+L"))
        focus.triggered.connect(self._focus_address)
        self.addAction(focus)
        bar.addSeparator()

    def _focus_address(self) -> None:
        if self.address is not None:
            self.address.setFocus()
            self.address.selectAll()

    def _open_address(self) -> None:
        assert self.address is not None
        url = address_to_url(self.address.text(), self.search)
        if url:
            self.address.setText(url)
            self.signals.open_url_requested.emit(self.context, url)
            self.display.setFocus()  # back to the page

    def _add_transfer_actions(self, bar: QToolBar, recipe: Recipe | None,
                              policy: ClipboardPolicy) -> None:
        context, signals = self.context, self.signals
        no_image = "the session is not running"
        self.paste_action = QAction("Paste host clipboard into guest", self)
        self.paste_action.setIconText("Paste into guest")
        self.paste_action.setShortcut(QKeySequence("Ctrl+Shift+V"))
        self.paste_action.triggered.connect(
            lambda: signals.clipboard_to_guest_requested.emit(context))
        self.copy_action = QAction("Copy guest clipboard to host", self)
        self.copy_action.setIconText("Copy from guest")
        self.copy_action.setShortcut(QKeySequence("Ctrl+Shift+C"))
        self.copy_action.triggered.connect(
            lambda: signals.clipboard_from_guest_requested.emit(context))
        self._refusals = {
            self.paste_action: refusal(recipe, policy, to_guest=True) if recipe else no_image,
            self.copy_action: refusal(recipe, policy, to_guest=False) if recipe else no_image,
        }
        self.send_action = QAction("Send file…", self)
        self.send_action.setToolTip("Copy files from this computer into the guest's Downloads "
                                    "folder (or drop them onto this window)")
        self.send_action.triggered.connect(lambda: signals.send_files_requested.emit(context, []))
        self.downloads = DownloadsPanel(context, signals)
        self.downloads_dock = QDockWidget("Downloads", self)
        self.downloads_dock.setObjectName("downloadsDock")
        self.downloads_dock.setWidget(self.downloads)
        self.downloads_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.downloads_dock)
        self.downloads_dock.hide()
        self.downloads_dock.visibilityChanged.connect(self._downloads_shown)
        self.downloads_action = self.downloads_dock.toggleViewAction()
        self.downloads_action.setText("Downloads")
        self.downloads_action.setToolTip("The files the guest downloaded: save them to this "
                                         "computer")
        for action in (self.paste_action, self.copy_action, self.send_action,
                       self.downloads_action):
            bar.addAction(action)
        self._update_actions()

    def _update_actions(self) -> None:
        for action in (self.reset_action, self.suspend_action, self.stop_action,
                       self.send_action):
            action.setEnabled(not self._busy)
        for action, why in self._refusals.items():
            action.setEnabled(why is None and not self._busy)
            shortcut = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            action.setToolTip(f"{action.text()} ({shortcut})" if why is None
                              else f"{action.text()}: not available — {why}")

    def _downloads_shown(self, visible: bool) -> None:
        if visible:
            self.signals.downloads_refresh_requested.emit(self.context)

    def show_downloads(self) -> None:
        """Open the Downloads panel (it lists the guest's files when it opens)."""
        self.downloads_dock.show()

    def follow(self, job: Job) -> None:
        """Show a job's phases in the status bar; no second reset/stop while it runs."""
        self._busy = True
        self._update_actions()
        job.progress.connect(lambda phase, _p: self.statusBar().showMessage(phase))
        job.ended.connect(self._job_ended)

    def _job_ended(self) -> None:
        self.statusBar().clearMessage()
        self._busy = False
        self._update_actions()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_files(event.mimeData()) and not self._busy:
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if local_files(event.mimeData()) and not self._busy:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        files = local_files(event.mimeData())
        if files and not self._busy:
            event.acceptProposedAction()
            self.signals.send_files_requested.emit(self.context, files)

    def replace_client(self, client: rfb.RfbClient) -> None:
        """After a quick reset: the new session's screen in the same window."""
        self.display.set_client(client)
        if self.address is not None:
            self.address.clear()  # a clean session: nothing of the old one shows
        self.display.setFocus()

    def close_for_real(self) -> None:
        """Close without asking (the session has ended)."""
        self._closing_for_real = True
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closing_for_real:
            self.save_geometry()
            event.accept()
            return
        event.ignore()  # the app asks keep/discard first and closes us when done
        self.signals.stop_requested.emit(self.context)
