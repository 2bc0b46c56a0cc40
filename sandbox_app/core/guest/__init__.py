"""Talking to what runs inside a VM: the guest agent, the screen (RFB), keys,
clipboard and file transfer. The guest is hostile: everything it sends is bounded and checked.
"""

from .agent import AgentDisconnected, ExecResult, GuestAgent
from .clipboard import ClipboardPolicy, ClipboardRefused, copy_from_guest, copy_to_guest, refusal
from .keymap import qnum_from_evdev, qnum_from_x11_keycode
from .rfb import MAX_DIMENSION, Encoding, RfbClient, RfbConnectionClosed, RfbError
from .transfer import (
    GuestFile,
    default_save_dir,
    list_downloads,
    move_in_guest,
    sanitize_name,
    save_to_host,
    send_to_guest,
)

__all__ = [
    "MAX_DIMENSION",
    "AgentDisconnected",
    "ClipboardPolicy",
    "ClipboardRefused",
    "Encoding",
    "ExecResult",
    "GuestAgent",
    "GuestFile",
    "RfbClient",
    "RfbConnectionClosed",
    "RfbError",
    "copy_from_guest",
    "copy_to_guest",
    "default_save_dir",
    "list_downloads",
    "move_in_guest",
    "qnum_from_evdev",
    "qnum_from_x11_keycode",
    "refusal",
    "sanitize_name",
    "save_to_host",
    "send_to_guest",
]
