"""The score cache's state: digest keys and the stores that hold one score per key.

Stores are plain objects (no HTTP); the gateway's cache layer decides when to read
and write them. Only digests and packed floats are stored, never query or document text.
"""

from policies.cache.keys import KeySpace
from policies.cache.memory import MemoryStore
from policies.cache.redis_store import RedisBase, RedisStore
from policies.cache.resp import Address, RespConnection, RespStore
from policies.cache.store import ErrorHook, ScoreStore, SharedStore
from policies.cache.tiered import TieredStore

__all__ = [
    "Address",
    "ErrorHook",
    "KeySpace",
    "MemoryStore",
    "RedisBase",
    "RedisStore",
    "RespConnection",
    "RespStore",
    "ScoreStore",
    "SharedStore",
    "TieredStore",
]
