"""What ``blankslate --help`` (and the man page made from the same parser) says besides the
options: the defaults, the exit codes, the environment variables and where the log is."""

from __future__ import annotations

import argparse

EXIT_CODES = (
    (0, "ok"),
    (1, "other error (no display, a file or folder that cannot be used…)"),
    (2, "bad usage or name"),
    (3, "unknown context or image"),
    (4, "QEMU missing or failed"),
    (5, "image or snapshot missing or corrupt"),
    (6, "disk full"),
    (7, "wrong passphrase or locked context"),
    (8, "the guest agent failed"),
    (130, "cancelled (Ctrl-C, SIGTERM)"),
)

ENVIRONMENT = (
    ("BLANKSLATE_HOME", "keep everything (config, data, state, log) under this one folder"),
    ("BLANKSLATE_RECIPES", "the image recipes' folder (default: the installed vm_images)"),
    ("BLANKSLATE_ACCEL", "kvm or tcg: skip the accelerator probe"),
    ("BLANKSLATE_QEMU", "the qemu-system-x86_64 to run (default: the one on PATH)"),
    ("BLANKSLATE_KEYRING", "off: keep context keys out of the desktop keyring"),
    ("DISPLAY, WAYLAND_DISPLAY", "the display windows open on (none: use run --headless)"),
    ("QT_QPA_PLATFORM", "Qt's platform, e.g. offscreen for windows nobody sees"),
)


def epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES)
    env = "\n".join(f"  {name}\n      {what}" for name, what in ENVIRONMENT)
    return (
        f"exit codes:\n{codes}\n"
        "  `run --headless` without --json exits with its last failing --exec command's "
        "status.\n\n"
        f"environment:\n{env}\n\n"
        "log:\n"
        "  ~/.local/state/blankslate/log/blankslate.log (with BLANKSLATE_HOME: its\n"
        "  state/log/), rotated at 1 MiB; --debug writes debug detail to it."
    )


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's lines and adds "(default: X)" to options that have a default
    worth saying (not None or False, and not one the help text already tells)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False
                or default is argparse.SUPPRESS or not action.option_strings
                or action.help is argparse.SUPPRESS):
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser (and subcommand parsers, which take its class) using HelpFormatter."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
