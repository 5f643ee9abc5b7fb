"""Channel index spaces: the union-find under :func:`torch_rlprune.channel_groups`.

A *space* is a set of channels that must be pruned together index by index: channel ``c`` of a space is one
decision, whatever modules hold it. The tracer creates a space for every conv's output channels and merges
spaces that meet (a residual add). Two operations keep that exact when tensors are cut and regrouped:

* **refining** splits a space into consecutive parts, when only some of its channels travel somewhere (``split``,
  ``chunk``, ``x[:, a:b]``): each part becomes a space of its own, its members keeping their place by offset;
* **coarsening** makes ``f`` consecutive channels one unit, when only whole blocks can go (the input of a grouped
  convolution, whose groups must stay equal): the members' ``expand`` is multiplied by ``f``.

Both leave the old space behind as a *redirect* to its new pieces, so that a layout recorded earlier still
resolves to the current spaces (:meth:`Spaces.leaves`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

__all__ = ["Spaces"]


class Spaces:
    """Union-find over channel index spaces, with the members and the exclusion reason of each.

    Members are opaque to this class except for two integer fields, ``offset`` and ``expand``, that it rewrites
    when a space is refined or coarsened (members are frozen dataclasses, replaced with
    :func:`dataclasses.replace`).
    """

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.why_fixed: list[str | None] = []
        self.members: list[list[tuple[int, object]]] = []
        # A refined or coarsened root: its pieces in channel order, with how many of its units each piece's unit is.
        self.redirect: dict[int, list[tuple[int, int]]] = {}

    def new(self, size: int, fixed: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.why_fixed.append(fixed)
        self.members.append([])
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def leaves(self, i: int) -> list[tuple[int, int]]:
        """The current spaces that space ``i`` consists of, in channel order, each with how many of ``i``'s
        channels one of its units stands for."""
        root = self.find(i)
        if root not in self.redirect:
            return [(root, 1)]
        return [(leaf, f * g) for piece, f in self.redirect[root] for leaf, g in self.leaves(piece)]

    def roots(self) -> list[int]:
        """Every current space (a root that is not redirected), in creation order."""
        return sorted({self.find(i) for i in range(len(self.parent))} - set(self.redirect))

    def fix(self, i: int, why: str) -> None:
        for leaf, _ in self.leaves(i):
            if self.why_fixed[leaf] is None:
                self.why_fixed[leaf] = why

    def add(self, space: int, order: int, member: object) -> None:
        (leaf, factor), *rest = self.leaves(space)
        assert factor == 1 and not rest, "members join a space before it is refined or coarsened"
        self.members[leaf].append((order, member))

    def _replace(self, root: int, pieces: list[tuple[int, int]], remap: Callable[[object, int], object]) -> None:
        """Move ``root``'s members to ``pieces`` (space, first channel of ``root`` it holds)."""
        for space, start in pieces:
            self.why_fixed[space] = self.why_fixed[root]
            self.members[space] = [(order, remap(m, start)) for order, m in self.members[root]]
        self.members[root] = []

    def refine(self, i: int, cuts: Sequence[int]) -> bool:
        """Make every position in ``cuts`` (in channels of space ``i``) a boundary between spaces.

        Returns ``False`` (and changes nothing more) if a cut falls inside a coarsened unit.
        """
        position = 0
        for leaf, factor in self.leaves(i):
            end = position + self.size[leaf] * factor
            inside = sorted({c for c in cuts if position < c < end})
            if any((c - position) % factor for c in inside):
                return False
            if inside:
                bounds = [0, *((c - position) // factor for c in inside), self.size[leaf]]
                pieces = [(self.new(b - a), a) for a, b in zip(bounds, bounds[1:])]
                self._replace(
                    leaf, pieces, lambda m, start: dataclasses.replace(m, offset=m.offset + start * m.expand)
                )
                self.redirect[leaf] = [(space, 1) for space, _ in pieces]
            position = end
        return True

    def coarsen(self, i: int, factor: int) -> bool:
        """Make every unit of space ``i`` at least ``factor`` channels, aligned to multiples of ``factor``.

        Returns ``False`` where that cannot be done exactly (a piece of another size or alignment).
        """
        position = 0
        for leaf, unit in self.leaves(i):
            size = self.size[leaf] * unit
            if position % factor or size % factor or (factor % unit and unit % factor):
                return False
            position += size
        for leaf, unit in self.leaves(i):
            if unit < factor:
                step = factor // unit
                coarse = self.new(self.size[leaf] // step)
                self._replace(leaf, [(coarse, 0)], lambda m, _: dataclasses.replace(m, expand=m.expand * step))
                self.redirect[leaf] = [(coarse, step)]
        return True

    def union(self, a: int, b: int) -> bool:
        """Merge two current spaces of the same size; ``False`` if the sizes differ."""
        a, b = self.find(a), self.find(b)
        if a == b:
            return True
        if self.size[a] != self.size[b]:
            return False
        self.parent[b] = a
        self.members[a] += self.members[b]
        self.members[b] = []
        self.why_fixed[a] = self.why_fixed[a] or self.why_fixed[b]
        return True
