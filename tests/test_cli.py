"""The torch-rlprune command: run, the three steps, compare, and the errors a user can make.

Every pipeline here runs with --quick (BasicCNN at width 0.25, 1 epoch, 16 episodes) on the offline digits data
and one CPU thread (--workers 1), so that the whole file takes well under a minute on 2 cores.
"""

import csv
import json
import shutil
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

import torch_rlprune as rlp
from torch_rlprune import pipeline
from torch_rlprune.cli import main
from torch_rlprune.data import batches, load_data
from torch_rlprune.training import evaluate

from conftest import QUICK, assert_user_error, run_main



@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code, stdout, stderr = run_main(["run", *QUICK, "--out", str(out)])
    assert code == 0, stderr
    return out, stdout


def example(digits):
    return digits.val.batch(torch.arange(1))[0]


def test_help_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "torch_rlprune", "--help"], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for command in ("run", "search", "slim", "train", "compare"):
        assert command in done.stdout
    assert "validation split" in done.stdout and "test" in done.stdout


def test_command_help_lists_the_flags_and_the_splits():
    code, out, _ = run_main(["run", "--help"])
    assert code == 0
    for flag in ("--method", "--amount", "--episodes", "--reward", "--reward-batches", "--rewind-epoch", "--rewind-to",
                 "--epochs", "--data", "--data-root", "--download", "--device", "--seed", "--workers", "--tensorboard",
                 "--quiet", "--out", "--overwrite", "--quick"):  # fmt: skip
        assert flag in out
    assert "carved out of the training" in " ".join(out.split())
    code, out, _ = run_main(["compare", "--help"])
    assert code == 0 and "--methods" in out and "--amounts" in out and "--seeds" in out


def test_run_writes_the_run_folder(quick_run):
    out, stdout = quick_run
    for name in ("config.json", "log.txt", "snapshots/init.pt", "snapshots/epoch1.pt", "dense.json", "search.pt",
                 "history.csv", "search.json", "mask.pt", "ticket.pt", "model.pt", "train.json", "report.json",
                 "report.md"):  # fmt: skip
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["dense"]["filters"] == 240  # BasicCNN at width 0.25: 16 + 32 + 64 + 128
    assert report["pruned"]["filters"] == 240 - round(0.7 * 240)
    assert sum(k for k, _ in report["filters_per_layer"].values()) == report["pruned"]["filters"]
    assert report["pruned"]["params"] < report["dense"]["params"] and report["pruned"]["macs"] < report["dense"]["macs"]
    assert report["search"]["method"] == "rl" and report["search"]["evaluations"] == 16
    assert report["search"]["seconds"] > 0 and report["pruned"]["latency_ms"] > 0
    assert report["data"]["val"] > 0 and report["data"]["test"] > 0
    with open(out / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 16
    # The terminal summary and the Markdown report say the same.
    assert "test accuracy" in stdout and "MACs per example" in stdout and "CPU latency" in stdout
    assert f"{report['pruned']['params']:,}" in stdout and f"{report['pruned']['params']:,}" in (out / "report.md").read_text()
    assert "features.12" in (out / "report.md").read_text()
    assert "training the dense basiccnn" in (out / "log.txt").read_text()


def test_saved_models_load_back_and_match_the_report(quick_run, digits):
    out, _ = quick_run
    report = json.loads((out / "report.json").read_text())
    x = example(digits)
    model = rlp.load(out / "model.pt", rlp.models.BasicCNN(width=0.25), x)
    filters = sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert filters == report["pruned"]["filters"]
    assert evaluate(model, batches(digits.test, 256)) == pytest.approx(report["pruned"]["accuracy"])
    ticket = rlp.load(out / "ticket.pt", rlp.models.BasicCNN(width=0.25), x)
    assert [m.out_channels for m in ticket.modules() if isinstance(m, torch.nn.Conv2d)] == [
        kept for kept, _ in report["filters_per_layer"].values()
    ]
    masked = pipeline.load_mask(out / "mask.pt", rlp.models.BasicCNN(width=0.25), x)
    assert {n: list(v) for n, v in rlp.metrics.filters_per_layer(masked, x).items()} == report["filters_per_layer"]


def test_steps_one_at_a_time_give_the_run_result(quick_run, tmp_path):
    run_report = json.loads((quick_run[0] / "report.json").read_text())
    out = tmp_path / "steps"
    code, stdout, err = run_main(["search", *QUICK, "--out", str(out)])
    assert code == 0, err
    assert (out / "mask.pt").is_file() and not (out / "ticket.pt").exists() and not (out / "dense.json").exists()
    assert "next: torch-rlprune slim" in stdout
    code, stdout, err = run_main(["slim", "--out", str(out), "--quiet", "--workers", "1"])
    assert code == 0, err
    assert (out / "ticket.pt").is_file() and not (out / "model.pt").exists()
    code, stdout, err = run_main(["train", "--out", str(out), "--quiet", "--workers", "1"])
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert (out / "dense.json").is_file() and (out / "model.pt").is_file()
    # Same settings and seed: the same dense control, the same mask, the same trained ticket.
    assert report["filters_per_layer"] == run_report["filters_per_layer"]
    assert report["dense"]["accuracy"] == pytest.approx(run_report["dense"]["accuracy"])
    assert report["pruned"]["accuracy"] == pytest.approx(run_report["pruned"]["accuracy"])
    assert "test accuracy" in stdout


def test_search_resumes_to_the_uninterrupted_result(quick_run, tmp_path):
    run_search = json.loads((quick_run[0] / "search.json").read_text())
    out = tmp_path / "resume"
    assert run_main(["search", *QUICK, "--episodes", "8", "--out", str(out)])[0] == 0
    assert json.loads((out / "search.json").read_text())["evaluations"] == 8
    code, _, err = run_main(["search", "--resume", "--episodes", "16", "--out", str(out), "--quiet", "--workers", "1"])
    assert code == 0, err
    resumed = json.loads((out / "search.json").read_text())
    assert resumed["evaluations"] == 16
    assert resumed["filters_per_layer"] == run_search["filters_per_layer"]
    assert resumed["best_reward"] == pytest.approx(run_search["best_reward"])


def test_slim_can_rewind_to_k(quick_run, tmp_path, digits):
    out = tmp_path / "k"
    shutil.copytree(quick_run[0], out)
    code, _, err = run_main(["slim", "--out", str(out), "--rewind-to", "k", "--overwrite", "--quiet"])
    assert code == 0, err
    assert not (out / "model.pt").exists()  # the later step's outputs are stale now
    assert json.loads((out / "config.json").read_text())["config"]["rewind_to"] == "k"
    x = example(digits)
    small = rlp.load(out / "ticket.pt", rlp.models.BasicCNN(width=0.25), x)
    at_k = rlp.load(quick_run[0] / "ticket.pt", rlp.models.BasicCNN(width=0.25), x)  # rewound to init
    rlp.rewind(at_k, out / "snapshots" / "epoch1.pt")
    assert torch.equal(small.features[0].weight, at_k.features[0].weight)


def test_compare_writes_tables_and_plot(tmp_path):
    out = tmp_path / "compare"
    code, stdout, err = run_main(["compare", *QUICK, "--methods", "l1", "random", "--amounts", "0.5", "0.7",
                                  "--out", str(out)])  # fmt: skip
    assert code == 0, err
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], float(r["amount"])) for r in rows] == [
        ("dense", 0.0), ("l1", 0.5), ("random", 0.5), ("l1", 0.7), ("random", 0.7)
    ]
    kept = {(r["method"], float(r["amount"])): int(r["filters"]) for r in rows}
    assert kept[("l1", 0.5)] == kept[("random", 0.5)] == 120 and kept[("l1", 0.7)] == 72
    assert all(0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert int(rows[2]["evaluations"]) == 16 and int(rows[1]["evaluations"]) == 0
    table = (out / "compare.md").read_text()
    assert "| l1 | 0.50 |" in table and "| random | 0.70 |" in table
    assert "l1" in stdout and "random" in stdout and "test accuracy" in stdout
    pytest.importorskip("matplotlib")
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_without_matplotlib_still_writes_the_tables(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # "import matplotlib.figure" now raises ImportError
    rows = [{"method": "dense", "amount": 0.0, "seed": 0, "accuracy": 0.9, "params": 100, "macs": 1000, "filters": 10,
             "latency_ms": 1.0, "sparsity": 0.0, "search_seconds": 0.0},
            {"method": "l1", "amount": 0.5, "seed": 0, "accuracy": 0.8, "params": 30, "macs": 300, "filters": 5,
             "latency_ms": 0.5, "sparsity": 0.5, "search_seconds": 0.1}]  # fmt: skip
    messages = []
    written = pipeline.write_comparison(rows, tmp_path, log=messages.append)
    assert {p.name for p in written} == {"compare.csv", "compare.json", "compare.md"}
    assert not (tmp_path / "compare.png").exists()
    assert len(messages) == 1 and "matplotlib" in messages[0] and "pip install" in messages[0]


# --------------------------------------------------------------------------------------------------------------
# Errors a user can make: one line on stderr, exit status 2 before any work (1 during it), no traceback
# --------------------------------------------------------------------------------------------------------------


def test_unknown_model(tmp_path):
    result = run_main(["run", "--model", "resnet81", "--out", str(tmp_path / "x")])
    assert_user_error(result, 2, "unknown model 'resnet81'", "resnet18")
    assert not (tmp_path / "x").exists()  # checked before any work


@pytest.mark.parametrize("amount", ["1.5", "0", "-0.2", "1", "seventy"])
def test_bad_amount(amount, tmp_path):
    assert_user_error(run_main(["run", "--amount", amount, "--out", str(tmp_path / "x")]), 2, "--amount")
    assert not (tmp_path / "x").exists()


def test_min_keep_is_a_count_or_a_fraction(tmp_path):
    for bad in ("1.5", "-1", "few"):
        assert_user_error(run_main(["run", "--min-keep", bad, "--out", str(tmp_path / "x")]), 2, "--min-keep")
    out = tmp_path / "floor"
    code, _, err = run_main(["search", *QUICK, "--method", "l1", "--min-keep", "0.25", "--out", str(out)])
    assert code == 0, err
    kept = json.loads((out / "search.json").read_text())["filters_per_layer"]
    assert sum(k for k, _ in kept.values()) == 72
    assert all(k >= -(-n // 4) for k, n in kept.values()), kept  # at least a quarter of every layer, rounded up


def test_bad_amounts_in_compare(tmp_path):
    assert_user_error(run_main(["compare", "--amounts", "0.5", "2", "--out", str(tmp_path / "x")]), 2, "--amounts")


def test_unknown_method(tmp_path):
    assert_user_error(run_main(["run", "--method", "magnitude", "--out", str(tmp_path / "x")]), 2,
                      "--method", "invalid choice", "'magnitude'")  # fmt: skip
    assert_user_error(run_main(["compare", "--methods", "l1", "obd"]), 2, "--methods", "'obd'")


def test_missing_data_root(tmp_path):
    missing = tmp_path / "nowhere"
    assert_user_error(run_main(["run", "--data", "cifar10", "--data-root", str(missing), "--out", str(tmp_path / "x")]),
                      2, str(missing), "does not exist", "--download")  # fmt: skip
    assert_user_error(run_main(["run", "--data", f"imagefolder:{missing}", "--out", str(tmp_path / "x")]), 2,
                      str(missing), "does not exist")  # fmt: skip
    assert_user_error(run_main(["run", "--data", "mnist", "--out", str(tmp_path / "x")]), 2, "unknown data 'mnist'")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["run", "search"])
def test_a_disk_too_full_for_the_run_is_refused_before_training(tmp_path, monkeypatch, command):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=2 * 2**20))
    out = tmp_path / "run"
    assert_user_error(run_main([command, *QUICK, "--out", str(out)]), 2, "only 2 MiB free", "the run writes about 18 MiB")
    assert [p.name for p in out.iterdir()] == []  # nothing trained, nothing written


def test_run_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("{}")
    assert_user_error(run_main(["run", "--out", str(out)]), 2, str(out), "--overwrite")
    assert_user_error(run_main(["compare", "--out", str(out)]), 2, "--overwrite")
    assert (out / "report.json").read_text() == "{}"


def test_steps_refuse_to_overwrite_and_to_run_out_of_order(quick_run, tmp_path):
    assert_user_error(run_main(["slim", "--out", str(quick_run[0])]), 2, "ticket.pt exists", "--overwrite")
    assert_user_error(run_main(["train", "--out", str(quick_run[0])]), 2, "--overwrite")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(run_main(["slim", "--out", str(empty)]), 2, "no config.json", "torch-rlprune search")
    half = tmp_path / "half"
    half.mkdir()
    for name in ("config.json", "mask.pt", "search.json"):
        shutil.copy(quick_run[0] / name, half / name)
    assert_user_error(run_main(["train", "--out", str(half)]), 2, "ticket.pt not found", "torch-rlprune slim")
    assert_user_error(run_main(["search", "--resume", "--out", str(empty)]), 2, "no config.json")
    assert_user_error(run_main(["slim"]), 2, "--out")


def test_output_folder_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_user_error(run_main(["run", "--out", str(blocker / "run")]), 2, "cannot write")
    assert_user_error(run_main(["run", "--out", str(blocker)]), 2, "is a file")


def test_tensorboard_needs_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = tmp_path / "run"
    assert_user_error(run_main(["run", *QUICK, "--out", str(out), "--tensorboard", str(tmp_path / "tb")]), 2,
                      "pip install tensorboard")  # fmt: skip
    assert not (out / "config.json").exists()  # nothing ran


def test_cuda_device_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_user_error(run_main(["run", "--device", "cuda", "--out", str(tmp_path / "x")]), 2, "CUDA is not available")
    assert_user_error(run_main(["run", "--device", "abacus", "--out", str(tmp_path / "x")]), 2, "unknown device")


class FakeWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter (TensorBoard is an optional extra)."""

    made: list = []  # noqa: RUF012

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


def test_overwrite_and_tensorboard(quick_run, tmp_path, monkeypatch):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    out = tmp_path / "again"
    shutil.copytree(quick_run[0], out)
    (out / "report.md").write_text("stale")
    (out / "snapshots" / "epoch7.pt").write_text("stale")
    code, _, err = run_main(["run", *QUICK, "--overwrite", "--out", str(out), "--tensorboard", str(tmp_path / "tb")])
    assert code == 0, err
    assert "features.12" in (out / "report.md").read_text() and not (out / "snapshots" / "epoch7.pt").exists()
    writer = FakeWriter.made[-1]
    assert writer.closed and writer.log_dir == str(tmp_path / "tb")
    tags = [tag for tag, _, _ in writer.scalars]
    assert tags.count("search/reward") == 16 and "search/width_std" in tags and "kept/group0" in tags
    assert "dense/loss" in tags and "pruned/accuracy" in tags


def test_errors_during_the_work_exit_1(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()  # exists, but has no train/ and test/
    result = run_main(["run", *QUICK, "--data", f"imagefolder:{folder}", "--out", str(tmp_path / "run")])
    assert_user_error(result, 1, "train", "is not a folder")
    assert not any((tmp_path / "run").iterdir())


def test_model_that_does_not_take_the_images(tmp_path):
    result = run_main(["run", "--model", "vit_b_16", "--workers", "1", "--out", str(tmp_path / "run")])
    assert_user_error(result, 1, "vit_b_16 does not run on the 3x32x32 images", "--image-size")
    assert not any((tmp_path / "run").iterdir())  # the folder was only checked; a rerun needs no --overwrite


def test_an_error_from_inside_torch_is_flagged_as_unforeseen(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *args, **kwargs: nn.Linear("wide", 2))
    status, _, err = run_main(["run", *QUICK, "--out", str(tmp_path / "run")])
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert "(TypeError in linear.py, which this package did not foresee: rerun with --traceback and report it)" in err
    # The package's own errors carry no such note, nor do damaged files.
    status, _, err = run_main(["run", "--model", "vit_b_16", "--workers", "1", "--out", str(tmp_path / "vit")])
    assert status == 1 and "does not run on" in err and "did not foresee" not in err
    damaged = tmp_path / "damaged"
    (damaged / "snapshots").mkdir(parents=True)
    (damaged / "mask.pt").touch()
    (damaged / "config.json").write_text("{not json")
    status, _, err = run_main(["slim", "--out", str(damaged)])
    assert status == 1 and "config.json is not valid JSON" in err and "did not foresee" not in err


def test_traceback_flag_shows_the_error(tmp_path):
    with pytest.raises(Exception, match="unknown model"):
        main(["run", "--model", "resnet81", "--traceback", "--out", str(tmp_path / "x")])


def test_version():
    code, out, _ = run_main(["--version"])
    assert code == 0 and rlp.__version__ in out


def test_run_from_trained_weights_searches_them_and_fine_tunes(tmp_path, digits):
    config = pipeline.PipelineConfig(width=0.25, epochs=2, rewind_epoch=0, seed=0)
    ws = pipeline.Workspace(config)
    model = ws.build_model()
    rlp.training.train(model, ws.train_loader(), 2, lr=0.05, seed=0)
    torch.save(model.state_dict(), tmp_path / "trained.pt")
    trained_accuracy = evaluate(model, ws.test_loader())

    out = tmp_path / "run"
    code, _, stderr = run_main(["run", *QUICK, "--weights", str(tmp_path / "trained.pt"), "--method", "l1",
                                "--out", str(out)])  # fmt: skip
    assert code == 0, stderr
    dense = json.loads((out / "dense.json").read_text())
    assert dense["epochs"] == 0 and dense["accuracy"] == pytest.approx(trained_accuracy)
    start = rlp.lottery.Snapshot.load(out / "snapshots" / "init.pt").state
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())  # searched at the weights given
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["rewind_epoch"] == 0 and report["config"]["weights"] == str(tmp_path / "trained.pt")
    assert "mask searched at the weights in" in (out / "report.md").read_text()


def test_bad_weights_are_user_errors(tmp_path):
    assert_user_error(run_main(["run", *QUICK, "--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "a")]),
                      2, "does not exist")  # fmt: skip
    torch.save(rlp.models.BasicCNN(width=0.5).state_dict(), tmp_path / "other.pt")
    # Found when the model is built, before any training: a run-time error (status 1), still one clear line.
    assert_user_error(run_main(["run", *QUICK, "--weights", str(tmp_path / "other.pt"), "--out", str(tmp_path / "b")]),
                      1, "does not fit the basiccnn", "size mismatch for features.0.weight", "same --model")  # fmt: skip
    torch.save(rlp.models.BasicCNN(width=0.25).state_dict(), tmp_path / "ok.pt")
    assert_user_error(run_main(["run", *QUICK, "--weights", str(tmp_path / "ok.pt"), "--rewind-epoch", "1",
                                "--out", str(tmp_path / "c")]), 2, "set rewind_epoch to 0")  # fmt: skip


def test_run_with_the_width_policy_and_recalibrated_rewards(tmp_path):
    out = tmp_path / "run"
    code, _, stderr = run_main(["search", *QUICK, "--policy", "widths", "--recalibrate", "1", "--out", str(out)])
    assert code == 0, stderr
    search = json.loads((out / "search.json").read_text())
    assert search["recalibrate"] == 1 and search["evaluations"] == 16
    with open(out / "history.csv") as f:
        header = next(csv.reader(f))
    assert "width_std" in header and "entropy" not in header  # the width policy's statistics, not the filters'
    assert_user_error(run_main(["search", *QUICK, "--recalibrate", "-1", "--out", str(tmp_path / "b")]), 2,
                      "--recalibrate")  # fmt: skip


def test_search_with_a_reward_pool_finalists_and_more_than_the_validation_split_holds(tmp_path):
    # The digits' validation split holds 144 images: 3 full batches of 48.
    small = [*QUICK, "--batch-size", "48", "--reward-batches", "1"]
    out = tmp_path / "run"
    code, _, stderr = run_main(["search", *small, "--reward-pool", "2", "--finalists", "3", "--out", str(out)])
    assert code == 0, stderr
    search = json.loads((out / "search.json").read_text())
    assert (search["reward_pool"], search["finalists"], search["evaluations"]) == (2, 3, 16)  # re-scoring in budget
    finalists = torch.load(out / "search.pt", weights_only=False)["finalists"]
    assert len(finalists) == len(search["final_rewards"]) == 3  # each re-scored on the fresh batch
    chosen = max(range(3), key=search["final_rewards"].__getitem__)
    ws = pipeline.Workspace(pipeline.read_config(out))
    masked = pipeline.load_mask(out / "mask.pt", ws.build_model(), ws.example_inputs)
    kept = torch.cat([rlp.alive_channels(g) for g in rlp.channel_groups(masked, ws.example_inputs)])
    assert torch.equal(kept, finalists[chosen][1])  # the mask kept is the finalist that scored best there
    # Found before any training, not at the first reward.
    assert_user_error(run_main(["search", *small, "--reward-pool", "3", "--finalists", "1", "--out",
                                str(tmp_path / "b")]), 1, "reward_pool=3 sets of 1 validation batches and one more "
                      "set for finalists=1 need 4 full batches of 48", "(3 full batches)")  # fmt: skip
    assert not (tmp_path / "b" / "snapshots").exists()
    assert_user_error(run_main(["search", *small, "--reward-pool", "2", "--out", str(tmp_path / "c")]), 2,
                      "re-score the best masks on fresh batches with finalists")  # fmt: skip


def test_finalists_are_rescored_on_the_validation_batches_after_the_pool():
    config = pipeline.PipelineConfig(width=0.25, batch_size=48, reward_batches=1, reward_pool=2, finalists=1)
    ws = pipeline.Workspace(config)
    val = list(ws.val_loader())
    fresh = ws.fresh_val_batches()
    assert len(val) == 3 and len(fresh) == 1
    assert all(torch.equal(a, b) for a, b in zip(fresh[0], val[2]))  # the third batch: after 2 sets of 1


def test_run_with_a_parameter_budget_keeps_at_most_its_share(tmp_path):
    out = tmp_path / "run"
    code, _, stderr = run_main(["run", *QUICK, "--method", "l1", "--budget", "params", "--amount", "0.6", "--out",
                                str(out)])  # fmt: skip
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    dense, pruned = report["dense"]["params"], report["pruned"]["params"]
    assert 0.3 * dense < pruned <= 0.4 * dense  # the budget, not far below it
    assert report["amount_counts"] == "parameters" and "at amount 0.6 of the parameters" in (out / "report.md").read_text()
