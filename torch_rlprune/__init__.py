"""torch-rlprune: structured pruning in the style of :mod:`torch.nn.utils.prune`."""

from . import models
from .groups import ChannelGroup, ChannelGroups, Member, Role, channel_groups

__all__ = ["models", "ChannelGroup", "ChannelGroups", "Member", "Role", "channel_groups"]
__version__ = "0.1.0.dev0"
