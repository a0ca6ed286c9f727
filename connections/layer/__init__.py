"""The custom Channels layer; design note: docs/channel-layer.md.

``connections.layer.RealtimeChannelLayer`` is the class ``CHANNEL_LAYERS`` names.
"""

from connections.layer.core import ChannelFull, RealtimeChannelLayer

__all__ = ["ChannelFull", "RealtimeChannelLayer"]
