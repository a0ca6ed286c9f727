"""Named channels as group members when Redis is configured; see docs/channel-layer.md.

A named channel (no ``!``) is one Redis list shared by every process, so a group cannot hold
it in one instance's memory the way it holds a socket's channel. Its memberships live in Redis
beside its list (``<prefix>:nm:{<list key>}``, a set of group names: any process's
``group_discard`` ends one), and each instance that added it to a group relays that group's
messages into the list. A relay pushes one message at most once, whichever instances relay it
(a ``SET NX`` on the message's id, beside the list), and not at all once the membership is
gone. Every key shares the list key's hash tag: one Redis node, one Cluster slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from realtime_layer.loops import LoopLink

# A membership nobody relays to for this long is forgotten by Redis (channels_redis's
# group_expiry default); each relayed message and each group_add renews it.
MEMBERSHIP_TTL_SECONDS = 86_400

# Relays of remote messages into named channels in flight per layer: past it a message is
# not relayed (counted), as a full member misses a group message.
RELAYS_IN_FLIGHT_MAX = 1_000

# What the relay script answered.
PUSHED = 1
FULL = 0
ALREADY_PUSHED = 2
NOT_A_MEMBER = -1

# KEYS: the list, the membership set, the message's dedup key.
# ARGV: entry, capacity, expiry (s), group, membership TTL (s), "1" to assert the membership
# first (its group_add could not reach Redis).
GROUP_PUSH = """
if ARGV[6] == '1' then
    redis.call('SADD', KEYS[2], ARGV[4])
end
if redis.call('SISMEMBER', KEYS[2], ARGV[4]) == 0 then
    return -1
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then
    return 2
end
redis.call('EXPIRE', KEYS[2], ARGV[5])
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def list_key(prefix: str, channel: str) -> str:
    return f"{prefix}:n:{channel}"


def membership_key(prefix: str, channel: str) -> str:
    return f"{prefix}:nm:{{{list_key(prefix, channel)}}}"


def pushed_key(prefix: str, channel: str, message_id: str) -> str:
    return f"{prefix}:nd:{{{list_key(prefix, channel)}}}:{message_id}"


class NamedMember:
    """This instance's memberships of one named channel, and the loop that relays them."""

    __slots__ = ("groups", "link", "unconfirmed")

    def __init__(self, link: LoopLink | None) -> None:
        self.groups: set[str] = set()
        # Groups whose SADD did not reach Redis: the next relay asserts them.
        self.unconfirmed: set[str] = set()
        self.link = link
