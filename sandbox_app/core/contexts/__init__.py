"""A user's contexts: profile, kept state (layers + encrypted RAM state), the vault of
keys, the crash journal, and compaction of kept layers.
"""

from .compaction import compact, needs_compaction
from .context import (
    DEFAULT_SEARCH,
    Broken,
    Context,
    ContextStore,
    ExitDefault,
    KeptLayer,
    KeptState,
    Manifest,
    Network,
    Profile,
    parse_dns,
)
from .journal import Journal, SessionRecord, collect_garbage, process_start_time
from .vault import Vault, key_store

__all__ = [
    "DEFAULT_SEARCH",
    "Broken",
    "Context",
    "ContextStore",
    "ExitDefault",
    "Journal",
    "KeptLayer",
    "KeptState",
    "Manifest",
    "Network",
    "Profile",
    "SessionRecord",
    "Vault",
    "collect_garbage",
    "compact",
    "key_store",
    "needs_compaction",
    "parse_dns",
    "process_start_time",
]
