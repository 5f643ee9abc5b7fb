"""torch-rlprune: structured pruning in the style of :mod:`torch.nn.utils.prune`.

The data flows one way: a model is traced into channel groups (:func:`channel_groups`), filters are scored
(:mod:`torch_rlprune.criteria`) and selected (:func:`global_structured`), and the selection becomes ordinary
``torch.nn.utils.prune`` masks (:mod:`torch_rlprune.masks`) that :mod:`torch_rlprune.metrics` counts.
"""

import sys

from . import channel_ops, criteria, data, lottery, metrics, models, search, training
from .channel_ops import register_channel_op, register_size_attribute
from .groups import ChannelGroup, ChannelGroups, Member, Role, channel_groups
from .lottery import LotteryTicket, reinitialize, rewind
from .masks import alive_channels, apply_channel_masks, effective_weight
from .methods import (
    RandomSearchPruning,
    RandomWidthPruning,
    RLStructuredPruning,
    SimulatedAnnealingPruning,
    global_structured,
    rl_structured,
)
from .search import rewards
from .selection import MACs, Params
from .serialization import load, save
from .slicing import slim

# These modules lived at the top level before the search family moved into torch_rlprune.search; their old
# import paths keep working.
for _name in ("controller", "evaluation", "features", "rewards"):
    sys.modules[f"{__name__}.{_name}"] = globals()[_name] = getattr(search, _name)
del _name

__all__ = [
    "criteria",
    "data",
    "metrics",
    "models",
    "ChannelGroup",
    "ChannelGroups",
    "Member",
    "Role",
    "channel_groups",
    "channel_ops",
    "register_channel_op",
    "register_size_attribute",
    "alive_channels",
    "apply_channel_masks",
    "effective_weight",
    "global_structured",
    "MACs",
    "Params",
    "rl_structured",
    "RLStructuredPruning",
    "SimulatedAnnealingPruning",
    "RandomSearchPruning",
    "RandomWidthPruning",
    "rewards",
    "training",
    "search",
    "slim",
    "save",
    "load",
    "lottery",
    "LotteryTicket",
    "rewind",
    "reinitialize",
]
__version__ = "0.1.0.dev0"
