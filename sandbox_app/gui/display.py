"""The VM's screen: paints the RFB framebuffer, forwards keyboard and mouse to the guest.

Keys go as QEMU extended key events (physical scancodes), so the guest's own layout decides
the character and every key works. On X11 Qt gives the X keycode (evdev + 8); where it gives
nothing (offscreen, some Wayland setups) a table maps Qt keys to scancodes. The picture is
scaled to the widget, keeping its aspect ratio; pointer coordinates are mapped back. When the
user resizes the window, the guest is asked (once the resizing settles) to take the new size,
so the picture is shown 1:1 again where the guest supports it.
"""

from __future__ import annotations

import contextlib

from PySide6.QtCore import QEvent, QPoint, QRect, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFocusEvent,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..core.guest import qnum_from_evdev, qnum_from_x11_keycode, rfb

K = Qt.Key
# Qt key → (evdev code, needs shift) for when the platform gives no native scancode (US map).
_EVDEV_ROWS = {16: "qwertyuiop", 30: "asdfghjkl", 44: "zxcvbnm"}
_FALLBACK: dict[int, tuple[int, bool]] = {}
for _start, _row in _EVDEV_ROWS.items():
    for _i, _ch in enumerate(_row):
        _FALLBACK[getattr(K, f"Key_{_ch.upper()}").value] = (_start + _i, False)
for _i, _d in enumerate("1234567890"):
    _FALLBACK[getattr(K, f"Key_{_d}").value] = (2 + _i, False)
for _key, _code, _shift in [
    (K.Key_Exclam, 2, True), (K.Key_At, 3, True), (K.Key_NumberSign, 4, True),
    (K.Key_Dollar, 5, True), (K.Key_Percent, 6, True), (K.Key_AsciiCircum, 7, True),
    (K.Key_Ampersand, 8, True), (K.Key_Asterisk, 9, True), (K.Key_ParenLeft, 10, True),
    (K.Key_ParenRight, 11, True), (K.Key_Minus, 12, False), (K.Key_Underscore, 12, True),
    (K.Key_Equal, 13, False), (K.Key_Plus, 13, True), (K.Key_Backspace, 14, False),
    (K.Key_Tab, 15, False), (K.Key_BracketLeft, 26, False), (K.Key_BraceLeft, 26, True),
    (K.Key_BracketRight, 27, False), (K.Key_BraceRight, 27, True), (K.Key_Return, 28, False),
    (K.Key_Enter, 28, False), (K.Key_Control, 29, False), (K.Key_Semicolon, 39, False),
    (K.Key_Colon, 39, True), (K.Key_Apostrophe, 40, False), (K.Key_QuoteDbl, 40, True),
    (K.Key_QuoteLeft, 41, False), (K.Key_AsciiTilde, 41, True), (K.Key_Shift, 42, False),
    (K.Key_Backslash, 43, False), (K.Key_Bar, 43, True), (K.Key_Comma, 51, False),
    (K.Key_Less, 51, True), (K.Key_Period, 52, False), (K.Key_Greater, 52, True),
    (K.Key_Slash, 53, False), (K.Key_Question, 53, True), (K.Key_Alt, 56, False),
    (K.Key_Space, 57, False), (K.Key_Escape, 1, False), (K.Key_Up, 103, False),
    (K.Key_Left, 105, False), (K.Key_Right, 106, False), (K.Key_Down, 108, False),
    (K.Key_Home, 102, False), (K.Key_End, 107, False), (K.Key_PageUp, 104, False),
    (K.Key_PageDown, 109, False), (K.Key_Insert, 110, False), (K.Key_Delete, 111, False),
    (K.Key_Meta, 125, False),
    *[(getattr(K, f"Key_F{n}"), 58 + n, False) for n in range(1, 11)],
    (K.Key_F11, 87, False), (K.Key_F12, 88, False),
]:
    _FALLBACK[_key.value] = (_code, _shift)
# Modifier keys: Qt modifier flag → (keysym, qnum), pressed for synthetic input that carries
# a modifier without its key (QTest, input methods).
_MODIFIER_KEYS = {
    Qt.KeyboardModifier.ShiftModifier: (0xFFE1, 0x2A),
    Qt.KeyboardModifier.ControlModifier: (0xFFE3, 0x1D),
    Qt.KeyboardModifier.AltModifier: (0xFFE9, 0x38),
}
_MODIFIER_QT_KEYS = {K.Key_Shift.value: Qt.KeyboardModifier.ShiftModifier,
                     K.Key_Control.value: Qt.KeyboardModifier.ControlModifier,
                     K.Key_Alt.value: Qt.KeyboardModifier.AltModifier}
CTRL, ALT, DELETE = (0xFFE3, 29), (0xFFE9, 56), (0xFFFF, 111)  # (keysym, evdev code)


def function_key(n: int) -> tuple[int, int]:
    """F1…F12 as (keysym, evdev code)."""
    return 0xFFBE + n - 1, (58 + n if n <= 10 else 76 + n)


MIN_GUEST_SIZE = QSize(640, 400)
"""Smaller windows scale the picture down rather than shrink the guest's desktop."""
RESIZE_SETTLE_MS = 400
# X keysyms for keys whose Qt text is empty.
_KEYSYMS = {
    K.Key_Return.value: 0xFF0D, K.Key_Enter.value: 0xFF0D, K.Key_Backspace.value: 0xFF08,
    K.Key_Tab.value: 0xFF09, K.Key_Escape.value: 0xFF1B, K.Key_Shift.value: 0xFFE1,
    K.Key_Control.value: 0xFFE3, K.Key_Alt.value: 0xFFE9, K.Key_Meta.value: 0xFFEB,
    K.Key_Left.value: 0xFF51, K.Key_Up.value: 0xFF52, K.Key_Right.value: 0xFF53,
    K.Key_Down.value: 0xFF54, K.Key_Home.value: 0xFF50, K.Key_End.value: 0xFF57,
    K.Key_PageUp.value: 0xFF55, K.Key_PageDown.value: 0xFF56, K.Key_Delete.value: 0xFFFF,
    K.Key_Insert.value: 0xFF63,
    **{getattr(K, f"Key_F{n}").value: 0xFFBE + n - 1 for n in range(1, 13)},
}


_RELEASE_CHORD = {K.Key_Control.value, K.Key_Alt.value}
RELEASE_HINT = "The keyboard is the guest's: press Ctrl+Alt to release it"


class VmDisplay(QWidget):
    """Shows one RFB client's framebuffer and sends it input.

    A click into the picture grabs the keyboard, as virt-manager and GNOME Boxes do: every
    key (the window's own shortcuts, and under X11 the desktop's, such as Alt+Tab) goes to
    the guest until Ctrl+Alt is pressed and released alone, or the window loses focus.
    """

    resized = Signal(int, int)
    grab_changed = Signal(bool)

    def __init__(self, client: rfb.RfbClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image = QImage()
        self._buttons = 0
        self._held: set[Qt.KeyboardModifier] = set()  # modifier keys really held down
        self._pressed: set[int] = set()  # Qt keys whose press the guest got
        self._preferred = QSize(640, 400)
        self._asked: tuple[int, int] | None = None
        self._released_early: int | None = None  # a key already released inside a chord
        self.grabbed = False
        self._chord_down: set[int] = set()  # while grabbed: which of Ctrl/Alt are down
        self._release_armed = False  # Ctrl+Alt down with nothing else: releasing ungrabs
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 200)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(RESIZE_SETTLE_MS)
        self._settle.timeout.connect(self._ask_guest_size)
        self.client = client
        self.set_client(client)

    def set_client(self, client: rfb.RfbClient) -> None:
        """Show another connection (a new session after a quick reset)."""
        self.client = client
        self._asked = None
        client.on_update = self._on_update
        client.on_resize = self._on_resize
        self._on_resize(client.width, client.height)

    def set_preferred(self, size: QSize) -> None:
        self._preferred = size
        self.updateGeometry()

    def sizeHint(self) -> QSize:
        return self._preferred

    # ------------------------------------------------------------------ picture

    def _on_resize(self, w: int, h: int) -> None:
        # The QImage shares the client's buffer: an update costs no copy.
        self._image = QImage(self.client.framebuffer, w, h, w * 4, QImage.Format.Format_RGB32)
        self.resized.emit(w, h)
        self.update()

    def _on_update(self, x: int, y: int, w: int, h: int) -> None:
        target = self._target()
        if target.isEmpty() or self._image.isNull():
            return
        sx = target.width() / self._image.width()
        sy = target.height() / self._image.height()
        # Repaint only the dirty rectangle (plus a pixel of slack for smooth scaling).
        self.update(QRect(int(target.x() + x * sx) - 1, int(target.y() + y * sy) - 1,
                          int(w * sx) + 3, int(h * sy) + 3))

    def _target(self) -> QRect:
        """Where the guest picture goes: scaled to fit, aspect kept, centred."""
        iw, ih = self._image.width(), self._image.height()
        if iw <= 0 or ih <= 0:
            return QRect()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = round(iw * scale), round(ih * scale)
        return QRect((self.width() - w) // 2, (self.height() - h) // 2, w, h)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        target = self._target()
        dirty = event.rect()
        if self._image.isNull() or not target.contains(dirty):
            painter.fillRect(dirty, QColor(0, 0, 0))  # the bars around the picture
        if not self._image.isNull():
            part = dirty.intersected(target)
            if target.size() == self._image.size():
                painter.drawImage(part, self._image, part.translated(-target.topLeft()))
            elif not part.isEmpty():
                # Scaled: only the part of the image under the dirty area, never the frame.
                painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
                sx = self._image.width() / target.width()
                sy = self._image.height() / target.height()
                source = QRectF((part.x() - target.x()) * sx, (part.y() - target.y()) * sy,
                                part.width() * sx, part.height() * sy)
                painter.drawImage(QRectF(part), self._image, source)
        painter.end()

    def grab_guest(self) -> QImage:
        """A copy of the guest's screen at its own resolution."""
        return self._image.copy()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._settle.start()  # ask the guest once the user stops dragging

    def _ask_guest_size(self) -> None:
        dpr = self.devicePixelRatioF()
        w = max(round(self.width() * dpr), MIN_GUEST_SIZE.width()) & ~7
        h = max(round(self.height() * dpr), MIN_GUEST_SIZE.height()) & ~7
        if (w, h) in ((self.client.width, self.client.height), self._asked):
            return
        with contextlib.suppress(rfb.RfbError):  # the display is closing: nothing to resize
            if self.client.set_desktop_size(w, h):  # False: the server cannot; we scale
                self._asked = (w, h)

    # ------------------------------------------------------------------ keyboard

    def _scancode(self, event: QKeyEvent) -> tuple[int | None, bool]:
        """The key's qnum, and whether the character needs Shift (table fallback only)."""
        native = qnum_from_x11_keycode(event.nativeScanCode())
        if native is not None:
            return native, False
        code, shift = _FALLBACK.get(event.key(), (0, False))
        text = event.text()
        shift = shift or (len(text) == 1 and text.isalpha() and text.isupper())
        return (qnum_from_evdev(code) if code else None), shift

    @staticmethod
    def _keysym(event: QKeyEvent) -> int:
        key = event.key()
        if key in _KEYSYMS:
            return _KEYSYMS[key]
        text = event.text()
        if text and ord(text[0]) >= 0x20:
            return ord(text[0])  # Latin-1 keysyms are the code points
        if K.Key_A.value <= key <= K.Key_Z.value:
            return key + 0x20  # Ctrl+letter gives a control character as text
        return key if 0x20 <= key <= 0x7E else 0

    def _send_key(self, event: QKeyEvent, down: bool) -> None:
        if event.isAutoRepeat() and not down:
            return
        modifier = _MODIFIER_QT_KEYS.get(event.key())
        if modifier is not None:
            (self._held.add if down else self._held.discard)(modifier)
        scancode, needs_shift = self._scancode(event)
        keysym = self._keysym(event)
        if keysym == 0 and scancode is None:
            return  # a key we cannot name to the guest
        if not down:
            if event.key() in self._pressed:  # not the release of the window's shortcut
                self._pressed.discard(event.key())
                self.client.key_event(keysym, False, scancode)
            return
        self._pressed.add(event.key())
        # Synthetic input may carry modifiers whose keys were never pressed: press them
        # around this key so the guest sees the same chord.
        wanted = {m for m in _MODIFIER_KEYS if event.modifiers() & m}
        if needs_shift:
            wanted.add(Qt.KeyboardModifier.ShiftModifier)
        if modifier is not None:
            wanted.discard(modifier)
        wrap = [m for m in _MODIFIER_KEYS if m in wanted and m not in self._held]
        for m in wrap:
            self.client.key_event(_MODIFIER_KEYS[m][0], True, _MODIFIER_KEYS[m][1])
        self.client.key_event(keysym, True, scancode)
        if wrap:
            self.client.key_event(keysym, False, scancode)
            for m in reversed(wrap):
                self.client.key_event(_MODIFIER_KEYS[m][0], False, _MODIFIER_KEYS[m][1])
            self._released_early = event.key()
            self._pressed.discard(event.key())

    def send_chord(self, keys: list[tuple[int, int]]) -> None:
        """Press ``keys`` (keysym, evdev code) in order and release them in reverse: a key
        combination the host would take for itself (Ctrl+Alt+Del, Ctrl+Alt+F1…)."""
        codes = [(keysym, qnum_from_evdev(code)) for keysym, code in keys]
        with contextlib.suppress(rfb.RfbError):  # the display is closing
            for keysym, qnum in codes:
                self.client.key_event(keysym, True, qnum)
            for keysym, qnum in reversed(codes):
                self.client.key_event(keysym, False, qnum)

    def set_grab(self, on: bool) -> None:
        """Take (or give back) the keyboard: the window's shortcuts stop while it is held."""
        if on == self.grabbed:
            return
        self.grabbed = on
        self._chord_down = set()
        self._release_armed = False
        if on:
            self.grabKeyboard()
        else:
            self.releaseKeyboard()
        self.grab_changed.emit(on)

    def event(self, event: QEvent) -> bool:
        if self.grabbed and event.type() == QEvent.Type.ShortcutOverride:
            event.accept()  # a key press for the guest, not a shortcut of the window
            return True
        return super().event(event)

    def focusOutEvent(self, event: QFocusEvent) -> None:
        self.set_grab(False)
        super().focusOutEvent(event)

    def _watch_release_chord(self, event: QKeyEvent, down: bool) -> None:
        """Ctrl and Alt pressed together with no other key, then one released: ungrab."""
        if not self.grabbed or event.isAutoRepeat():
            return
        key = event.key()
        if key not in _RELEASE_CHORD:
            self._release_armed = False  # Ctrl+Alt+Del, Ctrl+Alt+F1… are the guest's
        elif down:
            self._chord_down.add(key)
            self._release_armed = self._chord_down == _RELEASE_CHORD
        elif self._release_armed:
            self.set_grab(False)
        else:
            self._chord_down.discard(key)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        self._watch_release_chord(event, True)
        self._released_early = None
        # RfbError: the display is closing (session ending): nothing to type into.
        with contextlib.suppress(rfb.RfbError):
            self._send_key(event, True)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        self._watch_release_chord(event, False)
        if self._released_early == event.key():
            self._released_early = None
            return  # released right after its press, inside the modifier chord
        with contextlib.suppress(rfb.RfbError):
            self._send_key(event, False)

    def focusNextPrevChild(self, _next: bool) -> bool:
        return False  # Tab belongs to the guest

    # ------------------------------------------------------------------ pointer

    def _guest_pos(self, pos: QPoint) -> tuple[int, int]:
        t = self._target()
        if t.isEmpty():
            return 0, 0
        x = (pos.x() - t.x()) * self._image.width() / t.width()
        y = (pos.y() - t.y()) * self._image.height() / t.height()
        return int(x), int(y)

    _BUTTONS = {Qt.MouseButton.LeftButton: rfb.BUTTON_LEFT,
                Qt.MouseButton.MiddleButton: rfb.BUTTON_MIDDLE,
                Qt.MouseButton.RightButton: rfb.BUTTON_RIGHT}

    def _pointer(self, event: QMouseEvent) -> None:
        self._buttons = 0
        for qt_button, bit in self._BUTTONS.items():
            if event.buttons() & qt_button:
                self._buttons |= bit
        with contextlib.suppress(rfb.RfbError):
            self.client.pointer_event(*self._guest_pos(event.position().toPoint()),
                                      self._buttons)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        self.set_grab(True)
        self._pointer(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._pointer(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._pointer(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        x, y = self._guest_pos(event.position().toPoint())
        bit = rfb.WHEEL_UP if event.angleDelta().y() > 0 else rfb.WHEEL_DOWN
        with contextlib.suppress(rfb.RfbError):  # a wheel step: press + release its button
            self.client.pointer_event(x, y, self._buttons | bit)
            self.client.pointer_event(x, y, self._buttons)
