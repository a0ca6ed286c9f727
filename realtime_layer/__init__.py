"""The custom Channels layer; design note: docs/channel-layer.md.

``realtime_layer.RealtimeChannelLayer`` is the class ``CHANNEL_LAYERS`` names.
"""

from realtime_layer.core import ChannelFull, RealtimeChannelLayer

__all__ = ["ChannelFull", "RealtimeChannelLayer"]
