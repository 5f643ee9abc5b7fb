import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from torch_rlprune.data import ImageTensorDataset, Splits, augment_batch, batches, load_data

CIFAR_JPEG = Path(os.environ.get("TORCH_RLPRUNE_CIFAR10_JPEG",
                                 Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg"))  # fmt: skip


def image_id(images):
    """The id written into pixel (0, 0) of every image by ``write_folder`` (red channel)."""
    return images[:, 0, 0, 0].tolist()


def write_folder(root, per_class_train=10, per_class_test=4, classes=("cat", "dog", "emu"), size=8, fmt="png"):
    """An ImageFolder tree root/{train,test}/<class>/<i>.<fmt>; every image's red pixel (0, 0) is a unique id."""
    rng = np.random.default_rng(0)
    uid = 0
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                pixels[0, 0, 0] = uid
                uid += 1
                Image.fromarray(pixels).save(root / split / name / f"{i:03d}.{fmt}")
    return root


# ------------------------------------------------------------------------------------------------ datasets


def test_image_tensor_dataset_normalises_and_validates():
    images = torch.randint(0, 256, (20, 3, 5, 5), dtype=torch.uint8)
    data = ImageTensorDataset(images, torch.arange(20) % 4)
    x, y = data[3]
    assert x.dtype == torch.float32 and x.shape == (3, 5, 5) and int(y) == 3
    all_x = torch.stack([data[i][0] for i in range(20)])
    assert torch.allclose(all_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(all_x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    bx, by = data.batch(torch.tensor([3, 7]))
    assert torch.equal(bx[0], x) and by.tolist() == [3, 3]
    with pytest.raises(TypeError, match="uint8"):
        ImageTensorDataset(images.float(), torch.arange(20))
    with pytest.raises(TypeError, match="integer"):
        ImageTensorDataset(images, torch.rand(20))
    with pytest.raises(ValueError, match="20 images but 19 targets"):
        ImageTensorDataset(images, torch.arange(19))
    with pytest.raises(ValueError, match="one value per channel"):
        ImageTensorDataset(images, torch.arange(20), mean=[0.0], std=[1.0])


def test_augment_batch_crops_and_flips_each_image():
    images = torch.arange(2 * 6 * 6, dtype=torch.uint8).view(1, 2, 6, 6).repeat(64, 1, 1, 1)
    out = augment_batch(images, padding=0, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, images[0].flip(-1)) for o in out])
    same = torch.tensor([torch.equal(o, images[0]) for o in out])
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54
    out = augment_batch(images, padding=2, flip=False, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images[0], (2, 2, 2, 2))
    windows = [padded[:, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
    matches = [next(k for k, w in enumerate(windows) if torch.equal(o, w)) for o in out]
    assert len(set(matches)) > 10  # every output is one of the 25 windows, and offsets vary
    again = augment_batch(images, padding=2, flip=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        augment_batch(images[0])


def test_batches_cover_the_data_once_per_pass_and_are_seeded():
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    data = ImageTensorDataset(images, torch.arange(50))
    loader = batches(data, 16, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 4
    first, second = [torch.cat([y for _, y in loader]) for _ in range(2)]
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(50))
    assert not torch.equal(first, second)  # a new order every pass
    again = batches(data, 16, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([y for _, y in again]), first)
    for x, y in loader:  # the images are those of the dataset, normalised
        assert torch.equal(x, torch.stack([data[int(i)][0] for i in y]))
    assert len(batches(data, 16, drop_last=True)) == 3
    assert [len(y) for _, y in batches(data, 16, drop_last=True)] == [16, 16, 16]
    plain = torch.cat([y for _, y in batches(data, 16)])
    assert plain.tolist() == list(range(50))
    x, _ = next(iter(batches(data, 50, augment=True, generator=torch.Generator().manual_seed(0))))
    assert x.shape == (50, 3, 4, 4) and not torch.equal(x, data.batch(torch.arange(50))[0])


def test_batches_accept_a_tensor_dataset_and_match_a_dataloader():
    tensors = TensorDataset(torch.randn(10, 3, 4, 4), torch.arange(10))
    ours = [y for _, y in batches(tensors, 4)]
    theirs = [y for _, y in DataLoader(tensors, batch_size=4)]
    assert [t.tolist() for t in ours] == [t.tolist() for t in theirs]
    x, _ = next(iter(batches(tensors, 10, augment=True)))
    assert x.shape == (10, 3, 4, 4)
    images = ImageTensorDataset(torch.randint(0, 256, (10, 1, 3, 3), dtype=torch.uint8), torch.arange(10))
    x, _ = next(iter(DataLoader(images, batch_size=10)))
    assert torch.equal(x, images.batch(torch.arange(10))[0])


def test_batches_bad_arguments():
    data = TensorDataset(torch.randn(4, 2), torch.arange(4))
    with pytest.raises(TypeError, match="DataLoader"):
        batches([(1, 2)], 2)
    with pytest.raises(ValueError, match="batch_size"):
        batches(data, 0)
    with pytest.raises(ValueError, match="augment"):
        batches(data, 2, augment=True)
    with pytest.raises(ValueError, match="empty"):
        batches(TensorDataset(torch.randn(0, 2)), 2)


# ------------------------------------------------------------------------------------------------ imagefolder


def test_imagefolder_splits_are_disjoint_seeded_and_exact(tmp_path):
    root = write_folder(tmp_path / "tree")
    splits = load_data(f"imagefolder:{root}", val_fraction=0.2, seed=0)
    assert isinstance(splits, Splits)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 12)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (3, 3, 8)
    assert splits.classes == ["cat", "dog", "emu"] == splits.train.classes
    train_ids, val_ids = image_id(splits.train.images), image_id(splits.val.images)
    assert set(train_ids).isdisjoint(val_ids) and sorted(train_ids + val_ids) == list(range(30))
    assert sorted(image_id(splits.test.images)) == list(range(30, 42))
    # targets follow the sorted class folders: ids 0-9 are cats, 10-19 dogs, 20-29 emus
    assert all(t == i // 10 for i, t in zip(train_ids, splits.train.targets.tolist()))
    # PNG is lossless: the decoded pixels are those written
    written = np.asarray(Image.open(root / "train" / "dog" / "003.png"))
    index = train_ids.index(13) if 13 in train_ids else None
    source = splits.train if index is not None else splits.val
    index = index if index is not None else val_ids.index(13)
    assert np.array_equal(source.images[index].permute(1, 2, 0).numpy(), written)
    # normalised with the train split's statistics
    x = splits.train.batch(torch.arange(24))[0]
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    assert torch.equal(splits.val.mean, splits.train.mean) and torch.equal(splits.test.std, splits.train.std)
    # the same seed gives the same split, another seed another
    assert image_id(load_data(f"imagefolder:{root}", val_fraction=0.2, seed=0).val.images) == val_ids
    assert image_id(load_data(f"imagefolder:{root}", val_fraction=0.2, seed=1).val.images) != val_ids
    assert len(load_data(f"imagefolder:{root}", val_fraction=0.0).val) == 0


def test_imagefolder_resizes_converts_to_rgb_and_reads_jpeg(tmp_path):
    root = write_folder(tmp_path / "tree", per_class_train=3, per_class_test=1, fmt="jpg")
    Image.new("L", (12, 10), color=200).save(root / "train" / "cat" / "grey.png")  # other size, one channel
    with pytest.raises(ValueError, match="image_size"):
        load_data(f"imagefolder:{root}")
    splits = load_data(f"imagefolder:{root}", image_size=16, val_fraction=0.25)
    assert splits.train.images.shape[1:] == (3, 16, 16) and splits.test.images.shape[1:] == (3, 16, 16)
    assert len(splits.train) + len(splits.val) == 10 and splits.image_size == 16


def test_imagefolder_bad_trees(tmp_path):
    with pytest.raises(ValueError, match="train/ and test/"):
        load_data(f"imagefolder:{tmp_path / 'missing'}")
    root = write_folder(tmp_path / "tree", per_class_train=2, per_class_test=1)
    (root / "test" / "emu").rename(root / "test" / "owl")
    with pytest.raises(ValueError, match="different class folders"):
        load_data(f"imagefolder:{root}")
    (root / "test" / "owl").rename(root / "test" / "emu")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="give the folder"):
        load_data("imagefolder:")
    with pytest.raises(ValueError, match="leaves no training data"):
        load_data(f"imagefolder:{root}", val_fraction=0.95)


def test_bad_specs_and_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"unknown spec 'mnist'.*imagefolder:PATH"):
        load_data("mnist")
    with pytest.raises(TypeError, match="spec must be a string"):
        load_data(tmp_path)
    with pytest.raises(ValueError, match="val_fraction"):
        load_data("digits", val_fraction=1.0)
    with pytest.raises(ValueError, match="image_size"):
        load_data("digits", image_size=0)
    with pytest.raises(ValueError, match="root="):
        load_data("cifar10")
    with pytest.raises(ValueError, match="download=True"):
        load_data("cifar10", root=tmp_path)


# ------------------------------------------------------------------------------------------------ digits


def test_digits_splits():
    pytest.importorskip("sklearn")
    splits = load_data("digits")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1294, 144, 359)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, 32)
    x, y = splits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= int(y) < 10
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey repeated to 3 channels
    other = load_data("digits", seed=1, image_size=8)
    assert torch.equal(other.test.targets, splits.test.targets)  # the test split does not depend on the seed
    assert not torch.equal(other.val.targets, splits.val.targets)
    assert other.train.images.shape[1:] == (3, 8, 8)


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"torch-rlprune\[digits\]"):
        load_data("digits")


# ------------------------------------------------------------------------------------------------ CIFAR-10 copy


@pytest.mark.skipif(not (CIFAR_JPEG / "train").is_dir(), reason="no CIFAR-10 JPEG copy at " + str(CIFAR_JPEG))
def test_cifar10_jpeg_copy():
    splits = load_data(f"imagefolder:{CIFAR_JPEG}")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (45000, 5000, 10000)
    assert splits.classes[:3] == ["airplane", "automobile", "bird"] and splits.num_classes == 10
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape[1:] == (3, 32, 32)
    assert torch.bincount(splits.test.targets).tolist() == [1000] * 10
    assert 100 < float(splits.train.mean.mean()) < 140 and 50 < float(splits.train.std.mean()) < 80
    first = sorted((CIFAR_JPEG / "test" / "airplane").iterdir())[0]
    pil = torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1).int()
    assert (pil - splits.test.images[0].int()).abs().float().mean() < 2  # same image (decoders may differ by 1)
