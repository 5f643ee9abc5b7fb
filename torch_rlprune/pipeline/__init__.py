r"""The thesis pipeline end to end: train to epoch ``k``, search a mask, rewind, slim, train, report.

:func:`run_pipeline` is what ``torch-rlprune run`` does, and :func:`compare` what ``torch-rlprune compare``
does; the examples and the quickstart call them too. One run, for a :class:`PipelineConfig`:

1. load the data (:func:`torch_rlprune.data.load_data`): ``train``, a ``val`` split carved out of the training
   data, and ``test``. The search is rewarded on ``val`` only; ``test`` is read once, for the final report;
2. build the model (``"basiccnn"``, any torchvision classification model by name, or ``"timm:NAME"``; see
   :func:`resolve_model`) under ``seed`` and take a :class:`~torch_rlprune.LotteryTicket` snapshot ``"init"``;
3. train the dense model for ``epochs`` epochs (the *dense control*), taking snapshot ``"epoch<k>"`` after
   ``k = rewind_epoch`` of them, and measure it on ``test``;
4. rewind the dense model to epoch ``k`` and search the mask there with ``method`` at ``amount`` of the filters
   (:func:`torch_rlprune.global_structured`; a search method is rewarded on ``reward_batches`` validation
   batches);
5. rewind the kept filters to ``"init"`` (or to epoch ``k`` with ``rewind_to="k"``), slice the pruned ones out
   (:func:`torch_rlprune.slim`), train the small network with the dense control's schedule, and measure it.

"Amount" counts filters (output channels of convolutions), never parameters.

**The run folder.** Every step writes into one folder, which the next step reads:

====================  ==================================================================================
``config.json``       the settings (:class:`PipelineConfig`), written by the first step, read by the others
``log.txt``           what every step printed, with times
``snapshots/``        ``init.pt`` and ``epoch<k>.pt``: the weights to rewind to (:class:`~torch_rlprune.lottery.Snapshot`)
``dense.json``        the dense control: test accuracy, parameters, MACs, latency, training history
``search.pt``         the search checkpoint (search methods only); ``torch-rlprune search --resume`` continues it
``history.csv``       one row per evaluated mask: episode, reward, best reward so far, the method's statistics
``search.json``       the search: method, reward, time, evaluations, best reward, filters per layer
``mask.pt``           the mask: kept filter indices of every pruned channel group (:func:`save_mask`, :func:`load_mask`)
``ticket.pt``         the pruned network at the rewind point, sliced (:func:`torch_rlprune.save`; load it with
                      :func:`torch_rlprune.load` into a fresh model of the architecture)
``model.pt``          the trained pruned network, sliced (:func:`torch_rlprune.save` / :func:`torch_rlprune.load`)
``train.json``        the pruned network's training history and test metrics
``report.json``       the report (:class:`Report`): dense vs pruned accuracy, params, MACs, latency, search time,
                      filters per layer; ``report.md`` is the same as a Markdown page
====================  ==================================================================================

:func:`search_step`, :func:`slim_step` and :func:`train_step` are the three steps of ``run`` on their own
(``torch-rlprune search``, ``slim`` and ``train``); :func:`run_pipeline` runs them in a row on data loaded once.

Example:
    >>> import tempfile
    >>> from torch_rlprune.pipeline import PipelineConfig, run_pipeline
    >>> config = PipelineConfig(width=0.125, epochs=1, rewind_epoch=1, episodes=4, latency_time=0.01)
    >>> report = run_pipeline(config, tempfile.mkdtemp())           # doctest: +SKIP
    >>> report.pruned.filters, report.dense.filters                  # doctest: +SKIP
    (36, 120)
"""

from .comparison import compare, comparison_markdown, comparison_plot, comparison_table, write_comparison
from .config import (
    CRITERION_METHODS,
    METHODS,
    POLICIES,
    MODEL_SOURCES,
    REWARDS,
    SEARCH_METHODS,
    ModelSource,
    PipelineConfig,
    build_model,
    check_model_name,
    model_names,
    resolve_model,
    snapshot_name,
)
from .maskfile import MASK_FORMAT, load_mask, save_mask, unslice
from .measuring import Metrics, cpu_latency, measure
from .report import Report
from .steps import OUTPUTS, SEARCH_FIELDS, prune_model, read_config, run_pipeline, search_step, slim_step, train_step
from .workspace import Workspace

__all__ = [
    "PipelineConfig",
    "Metrics",
    "Report",
    "Workspace",
    "METHODS",
    "SEARCH_METHODS",
    "CRITERION_METHODS",
    "POLICIES",
    "REWARDS",
    "run_pipeline",
    "search_step",
    "slim_step",
    "train_step",
    "compare",
    "save_mask",
    "load_mask",
    "unslice",
    "measure",
    "cpu_latency",
    "model_names",
    "resolve_model",
    "MODEL_SOURCES",
    "ModelSource",
    "OUTPUTS",
    "read_config",
    "prune_model",
    "build_model",
    "check_model_name",
    "snapshot_name",
    "comparison_table",
    "comparison_markdown",
    "comparison_plot",
    "write_comparison",
    "MASK_FORMAT",
    "SEARCH_FIELDS",
]
