"""Physical keys → XT scancodes in QEMU's "qnum" numbering, for the RFB extended key event.

Sending the physical key (not the keysym) lets the guest apply its own layout, so every key
works whatever the host layout is. Linux evdev codes are the common ground: on X11/xcb (and
XWayland) Qt's ``nativeScanCode()`` is the X keycode, which is the evdev code + 8. Qt's
offscreen and some other platforms give 0: then there is no scancode and the caller sends the
keysym alone.

qnum: a set-1 scancode ``xx`` is ``xx``; an extended one ``e0 xx`` is ``0x80 | xx``.
"""

from __future__ import annotations

# evdev KEY_ESC (1) … KEY_KPDOT (83): the evdev code *is* the set-1 scancode.
_IDENTITY = range(1, 84)

_EXTRA: dict[int, int] = {
    85: 0x76,   # KEY_ZENKAKUHANKAKU
    86: 0x56,   # KEY_102ND (the extra key left of Z on ISO keyboards)
    87: 0x57,   # KEY_F11
    88: 0x58,   # KEY_F12
    89: 0x73,   # KEY_RO
    92: 0x79,   # KEY_HENKAN
    93: 0x70,   # KEY_KATAKANAHIRAGANA
    94: 0x7B,   # KEY_MUHENKAN
    96: 0x9C,   # KEY_KPENTER        e0 1c
    97: 0x9D,   # KEY_RIGHTCTRL      e0 1d
    98: 0xB5,   # KEY_KPSLASH        e0 35
    99: 0xB7,   # KEY_SYSRQ (Print)  e0 37
    100: 0xB8,  # KEY_RIGHTALT       e0 38
    102: 0xC7,  # KEY_HOME           e0 47
    103: 0xC8,  # KEY_UP             e0 48
    104: 0xC9,  # KEY_PAGEUP         e0 49
    105: 0xCB,  # KEY_LEFT           e0 4b
    106: 0xCD,  # KEY_RIGHT          e0 4d
    107: 0xCF,  # KEY_END            e0 4f
    108: 0xD0,  # KEY_DOWN           e0 50
    109: 0xD1,  # KEY_PAGEDOWN       e0 51
    110: 0xD2,  # KEY_INSERT         e0 52
    111: 0xD3,  # KEY_DELETE         e0 53
    113: 0xA0,  # KEY_MUTE           e0 20
    114: 0xAE,  # KEY_VOLUMEDOWN     e0 2e
    115: 0xB0,  # KEY_VOLUMEUP       e0 30
    117: 0x59,  # KEY_KPEQUAL
    119: 0xC6,  # KEY_PAUSE (QEMU's qnum for e1 1d 45)
    121: 0x7E,  # KEY_KPCOMMA
    122: 0xF2,  # KEY_HANGEUL
    123: 0xF1,  # KEY_HANJA
    124: 0x7D,  # KEY_YEN
    125: 0xDB,  # KEY_LEFTMETA       e0 5b
    126: 0xDC,  # KEY_RIGHTMETA      e0 5c
    127: 0xDD,  # KEY_COMPOSE (Menu) e0 5d
}

EVDEV_TO_QNUM: dict[int, int] = {**{code: code for code in _IDENTITY}, **_EXTRA}
"""Linux evdev key code → QEMU qnum (XT scancode)."""

X11_KEYCODE_OFFSET = 8
"""X keycodes from the evdev/xkb driver are evdev codes + 8."""


def qnum_from_evdev(code: int) -> int | None:
    """The qnum for a Linux evdev key code, or None if we do not know the key."""
    return EVDEV_TO_QNUM.get(code)


def qnum_from_x11_keycode(keycode: int) -> int | None:
    """The qnum for an X11 (xcb/XWayland) keycode such as Qt's ``nativeScanCode()``.

    0 (what offscreen and some platforms report) and unknown keys give None.
    """
    if keycode < X11_KEYCODE_OFFSET:
        return None
    return qnum_from_evdev(keycode - X11_KEYCODE_OFFSET)
