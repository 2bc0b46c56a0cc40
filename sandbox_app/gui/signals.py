"""App-wide signals: widgets ask for things here and learn about changes here.

Widgets never call each other or the controller directly (Vorta's pattern): the launcher,
the tray and the session windows emit requests; ``app.App`` carries them out and announces
``changed`` so every view re-reads the state it shows.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class AppSignals(QObject):
    # Requests (views → controller). The str is a context name.
    open_requested = Signal(str)
    quick_reset_requested = Signal(str)
    stop_requested = Signal(str)
    suspend_requested = Signal(str)
    stop_all_requested = Signal()
    remove_requested = Signal(str)
    create_requested = Signal(object, str)  # Profile, passphrase ("" for none)
    settings_requested = Signal(object)  # settings_dialog.SettingsChange
    build_requested = Signal(str)  # image name
    reset_context_requested = Signal(str)  # start it fresh on its image's new build
    # Backup (gui.backups carries them out).
    backup_requested = Signal(list)  # context names; empty: every context
    backup_settings_requested = Signal()  # open Backup settings…
    restore_requested = Signal()  # open Restore from backup…
    # Files and clipboard (gui.transfers carries them out); only ever on a user action.
    open_url_requested = Signal(str, str)  # context, URL (typed into the address bar)
    clipboard_to_guest_requested = Signal(str)
    clipboard_from_guest_requested = Signal(str)
    downloads_refresh_requested = Signal(str)
    save_downloads_requested = Signal(str, list)  # context, [core.transfer.GuestFile]
    move_to_persistent_requested = Signal(str, list)  # context, [GuestFile] in Downloads
    send_files_requested = Signal(str, list)  # context, [Path]; empty: ask which
    show_launcher_requested = Signal()
    quit_requested = Signal()
    # Notifications (controller → views).
    changed = Signal()
    error = Signal(str)
    notify = Signal(str, str)  # title, message: a desktop notification (the tray shows it)
    tcg_detected = Signal(bool)  # True: sessions run without KVM (show the warning)
