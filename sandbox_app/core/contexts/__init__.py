"""A user's contexts: profile, kept state (layers + encrypted RAM state), the vault of
keys, the crash journal, and compaction of kept layers.
"""

from .compaction import compact, needs_compaction
from .context import (
    DEFAULT_SEARCH,
    Broken,
    Context,
    ContextStore,
    DownloadsTo,
    ExitDefault,
    KeptLayer,
    KeptState,
    Manifest,
    Network,
    Profile,
    files_in_use,
    parse_dns,
)
from .journal import Journal, SessionRecord, collect_garbage, finish_renames, process_start_time
from .lock import async_context_lock, context_lock, try_context_lock
from .rename import rename_context
from .vault import Vault, key_store

__all__ = [
    "DEFAULT_SEARCH",
    "Broken",
    "Context",
    "ContextStore",
    "DownloadsTo",
    "ExitDefault",
    "Journal",
    "KeptLayer",
    "KeptState",
    "Manifest",
    "Network",
    "Profile",
    "SessionRecord",
    "Vault",
    "async_context_lock",
    "collect_garbage",
    "compact",
    "context_lock",
    "files_in_use",
    "finish_renames",
    "key_store",
    "needs_compaction",
    "parse_dns",
    "process_start_time",
    "rename_context",
    "try_context_lock",
]
