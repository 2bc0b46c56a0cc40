"""Which of a context's actions its state allows: one rule for the launcher and the tray."""

from __future__ import annotations

from enum import Enum

from ..core.session import RunState


class Action(Enum):
    """What the user can ask of one context (the views label them their own way)."""

    OPEN = "open"  # start it, or raise its window
    QUICK_RESET = "quick reset"
    STOP = "stop"  # keep or discard
    REMOVE = "remove"
    SETTINGS = "settings"  # applied from the next session
    BACK_UP = "back up"  # a running session's persistent folder is copied as it is
    START_FRESH = "start fresh"  # on the image's new build (its kept session is dropped)


def actions_for(state: RunState | None) -> set[Action]:
    """The actions a context in ``state`` allows (None: no context chosen).

    Nothing while a session starts, keeps or is erased: the job under way owns it.
    """
    if state is RunState.STOPPED:
        return {Action.OPEN, Action.QUICK_RESET, Action.REMOVE, Action.SETTINGS}
    if state is RunState.RUNNING:
        return {Action.OPEN, Action.QUICK_RESET, Action.STOP, Action.SETTINGS}
    return set()


def more_actions(state: RunState | None) -> set[Action]:
    """The actions of a context's "More" menu its state allows (apart from ``actions_for``,
    whose set the launcher's buttons and the tray's entries follow one to one)."""
    if state is RunState.STOPPED:
        return {Action.BACK_UP, Action.START_FRESH}
    if state is RunState.RUNNING:
        return {Action.BACK_UP}
    return set()
