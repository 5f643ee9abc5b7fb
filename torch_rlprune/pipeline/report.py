"""The report of a run: the dense control against the pruned network, for the terminal and as Markdown."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .config import PipelineConfig
from .measuring import Metrics
from .wording import model_label, percent, plural


@dataclass
class Report:
    """The result of a pipeline run: the dense control against the pruned network.

    Attributes:
        config (dict): the settings (:meth:`PipelineConfig.to_dict`).
        data (dict): the splits' sizes and uses (:meth:`Workspace.describe`).
        dense (Metrics): the dense control, trained with the same schedule.
        pruned (Metrics): the pruned, rewound, sliced and trained network.
        search (dict): ``method``, ``reward``, ``seconds``, ``evaluations``, ``best_reward`` (``None`` for a
            criterion), the finalists' ``final_rewards`` on fresh batches and ``interrupted`` (the fields of
            ``SEARCH_FIELDS``).
        filters_per_layer (dict): convolution name -> ``[kept, dense]`` filters.
        timings (dict): seconds per phase.
    """

    config: dict[str, Any]
    data: dict[str, Any]
    dense: Metrics
    pruned: Metrics
    search: dict[str, Any]
    filters_per_layer: dict[str, list[int]]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        """Fraction of the convolution filters removed."""
        return 1.0 - self.pruned.filters / self.dense.filters if self.dense.filters else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sparsity"] = self.sparsity
        data["amount_counts"] = PipelineConfig.from_dict(self.config).amount_description
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(data["config"], data["data"], Metrics.from_dict(data["dense"]), Metrics.from_dict(data["pruned"]),
                   data["search"], data["filters_per_layer"], data.get("timings", {}))  # fmt: skip

    def _rows(self) -> list[tuple[str, str, str, str]]:
        d, p = self.dense, self.pruned
        speedup = d.latency_ms / p.latency_ms if p.latency_ms > 0 else float("nan")
        batch = self.config.get("latency_batch", "?")
        threads = self.config.get("latency_threads", 1)
        return [
            ("test accuracy", percent(d.accuracy), percent(p.accuracy), f"{100 * (p.accuracy - d.accuracy):+.1f} points"),
            ("parameters", f"{d.params:,}", f"{p.params:,}", percent(p.params / d.params)),
            ("MACs per example", f"{d.macs:,}", f"{p.macs:,}", percent(p.macs / d.macs)),
            (f"CPU latency (batch {batch}, {threads} thread{'s' if threads != 1 else ''})", f"{d.latency_ms:.2f} ms", f"{p.latency_ms:.2f} ms", f"{speedup:.2f}x faster"),
            ("conv filters", f"{d.filters:,}", f"{p.filters:,}", f"{percent(self.sparsity)} pruned"),
        ]

    def _search_line(self) -> str:
        s = self.search
        if s.get("evaluations"):
            best = f", best reward {s['best_reward']:.4g} ({s['reward']} on validation data)"
            if s.get("final_rewards"):  # the mask kept is the finalist that scored best on fresh batches
                best += f", {max(s['final_rewards']):.4g} on fresh batches, best of {len(s['final_rewards'])} finalists"
            what = f"{s['evaluations']} masks evaluated in {s['seconds']:.1f} s{best}"
        else:
            what = f"criterion, {s['seconds']:.2f} s"
        return f"search: {s['method']}, {what}" + (" (interrupted)" if s.get("interrupted") else "")

    def _headline(self) -> str:
        c = self.config
        model = model_label(c)
        head = f"{model} on {c['data']}, {c['method']} at amount {c['amount']} of the "
        head += f"{PipelineConfig.from_dict(c).amount_counts}; "
        if c.get("weights"):
            return head + (f"mask searched at the weights in {c['weights']}, pruned network fine-tuned "
                           f"{plural(c['epochs'], 'epoch')}")  # fmt: skip
        rewound = "init" if c["rewind_to"] == "init" else f"epoch {c['rewind_epoch']}"
        return head + (f"mask searched at epoch {c['rewind_epoch']}, kept filters rewound to {rewound}; dense and "
                       f"pruned trained {plural(c['epochs'], 'epoch')}")  # fmt: skip

    def summary(self) -> str:
        """A fixed-width table for the terminal."""
        rows = [("", "dense", "pruned", "pruned vs dense"), *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [self._headline()]
        for row in rows:
            lines.append("  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]).rstrip())
        lines.append(self._search_line())
        if "total" in self.timings:
            lines.append(f"total time {self.timings['total']:.1f} s")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The report as a Markdown page."""
        d = self.data
        lines = [
            "# torch-rlprune run report",
            "",
            self._headline() + ".",
            "",
            (f"Data: {d['spec']}, {d['train']:,} training / {d['val']:,} validation / {d['test']:,} test images. "
             "The validation split, carved out of the training data, rewards the search; the test split is used "
             f"for this report only. Amount counts {PipelineConfig.from_dict(self.config).amount_description}."),
            "",
            "| | dense | pruned | pruned vs dense |",
            "| --- | ---: | ---: | ---: |",
            *(f"| {a} | {b} | {c} | {e} |" for a, b, c, e in self._rows()),
            "",
            self._search_line()[0].upper() + self._search_line()[1:] + ".",
            "",
            "## Filters per layer",
            "",
            "| layer | kept | dense | kept % |",
            "| --- | ---: | ---: | ---: |",
            *(f"| {n} | {k} | {t} | {percent(k / t)} |" for n, (k, t) in self.filters_per_layer.items()),
        ]
        if self.timings:
            lines += ["", "## Time", "", "| phase | seconds |", "| --- | ---: |"]
            lines += [f"| {k} | {v:.1f} |" for k, v in self.timings.items()]
        return "\n".join(lines) + "\n"
