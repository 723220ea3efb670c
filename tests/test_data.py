import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_serve.resnets.data import (
    DataLayoutError,
    download_cifar10,
    load_cifar10,
    load_image_folder_arrays,
    scan_labelled_folder,
)
from resnet_serve.resnets.spec import CIFAR10, CIFAR10_CLASSES, IMAGENET, ImageError
from resnet_serve.resnets.tensors import ImageFolderDataset, random_crop_flip, to_tensor_nchw


def test_shared_jpeg_tree_loads_in_official_order(cifar_jpg, cifar_exact, cifar_test_set):
    test = cifar_test_set
    assert test.images.shape == (10_000, 32, 32, 3) and test.images.dtype == np.uint8
    assert test.classes == list(CIFAR10_CLASSES)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    # the official test images 0..1016, exact; the JPEG copy of each is test/<class>/<rank within class>
    exact = np.load(cifar_exact / "test_first1017_uint8_nhwc.npy")
    labels = np.loadtxt(cifar_exact / "test_labels.txt", dtype=np.int64)[: len(exact)]
    first_of_class = np.searchsorted(test.labels, np.arange(10))
    seen = np.zeros(10, np.int64)
    errors = []
    for image, label in zip(exact[:200], labels[:200], strict=True):
        decoded = test.images[first_of_class[label] + seen[label]]
        seen[label] += 1
        errors.append(np.abs(decoded.astype(np.int16) - image).mean())
    # lossy JPEG (q~75): the shared README measures ~5.8/255 mean abs error
    assert np.mean(errors) < 9.0 and max(errors) < 20.0


def write_official_batches(folder, exact_dir, n=64):
    """Official-format python pickles (Python-2 style bytes keys) built from the exact subset."""
    folder.mkdir(parents=True)
    train = np.load(exact_dir / "train_batches_first1017_uint8_nhwc.npy")[:, :n]
    train_labels = np.loadtxt(exact_dir / "train_labels.txt", dtype=np.int64)
    test = np.load(exact_dir / "test_first1017_uint8_nhwc.npy")[:n]
    test_labels = np.loadtxt(exact_dir / "test_labels.txt", dtype=np.int64)[:n]

    def dump(name, images, labels):
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # official rows: R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": rows}, f)

    for b in range(5):
        dump(f"data_batch_{b + 1}", train[b], train_labels[b * 10000 : b * 10000 + n])
    dump("test_batch", test, test_labels)
    return train, test, test_labels


def test_official_pickles_load(tmp_path, cifar_exact):
    train, test, test_labels = write_official_batches(tmp_path / "cifar-10-batches-py", cifar_exact)
    got = load_cifar10(tmp_path, "test")
    assert np.array_equal(got.images, test) and np.array_equal(got.labels, test_labels)
    got_train = load_cifar10(tmp_path, "train")
    assert got_train.images.shape == (5 * 64, 32, 32, 3)
    assert np.array_equal(got_train.images[64:128], train[1])


def test_download_checks_md5_and_extracts(tmp_path, cifar_exact):
    write_official_batches(tmp_path / "src" / "cifar-10-batches-py", cifar_exact)
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(DataLayoutError, match="md5"):
        download_cifar10(tmp_path / "bad", url=archive.as_uri(), md5="0" * 32)
    assert not list((tmp_path / "bad").glob("*.tar.gz"))  # nothing corrupt left behind
    folder = download_cifar10(tmp_path / "good", url=archive.as_uri(), md5=md5)
    assert load_cifar10(folder.parent, "test").images.shape == (64, 32, 32, 3)


def make_image_folder(root, sizes_modes):
    rng = np.random.default_rng(0)
    for cls, entries in sizes_modes.items():
        (root / cls).mkdir(parents=True)
        for i, (size, mode, fmt) in enumerate(entries):
            img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
            img.save(root / cls / f"{i}.{fmt}")


def test_synthetic_image_folder(tmp_path):
    make_image_folder(
        tmp_path,
        {
            "cats": [((300, 200), "RGB", "jpg"), ((64, 500), "L", "png")],
            "dogs": [((256, 256), "RGBA", "png"), ((1000, 300), "CMYK", "jpg"), ((260, 300), "RGB", "webp")],
        },
    )
    ds = ImageFolderDataset(tmp_path, IMAGENET)
    assert ds.classes == ["cats", "dogs"] and len(ds) == 5
    labels = [ds[i][1] for i in range(len(ds))]
    assert labels == [0, 0, 1, 1, 1]
    for i in range(len(ds)):
        x, _ = ds[i]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    small = load_image_folder_arrays(tmp_path, CIFAR10)
    assert small.images.shape == (5, 32, 32, 3)


def test_wrong_layouts_say_what_is_expected(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    with pytest.raises(DataLayoutError, match=r"no class sub-directories \(found files such as a.png.*ROOT/<class>"):
        ImageFolderDataset(flat, IMAGENET)
    with pytest.raises(DataLayoutError, match="expected one of these CIFAR-10 layouts"):
        load_cifar10(flat, "train")
    with pytest.raises(DataLayoutError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere", "test")
    wrong = tmp_path / "wrong" / "test"
    make_image_folder(wrong, {"apples": [((32, 32), "RGB", "png")], "cat": [((32, 32), "RGB", "png")]})
    (wrong / "cat" / "cut.png").write_bytes(b"\x89PNG")  # the names are checked before anything is decoded
    with pytest.raises(DataLayoutError) as refused:
        load_cifar10(tmp_path / "wrong", "test")
    text = str(refused.value)
    assert "has class folders ['apples', 'cat'] (missing ['airplane', 'automobile', 'bird', 'deer'" in text
    assert "not expected ['apples']): labels are read from the folder names" in text
    assert "rename or add the folders" in text
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    with pytest.raises(DataLayoutError, match="no image files"):
        ImageFolderDataset(empty, IMAGENET)


def test_labelled_folders_are_matched_to_the_model_labels_by_name(tmp_path):
    """A model's classes in its own order (here not sorted): folder 'cat' holds class 1 whatever its place
    in the folder list. Before, every ImageFolder was numbered in sorted folder order, so a model trained
    with labels [dog, cat, bird] was scored against swapped labels without a word."""
    tree = tmp_path / "named"
    make_image_folder(tree, {"cat": [((8, 8), "RGB", "png")], "dog": [((8, 8), "RGB", "png")] * 2})
    classes, samples = scan_labelled_folder(tree, ["dog", "cat", "bird"])
    assert classes == ["dog", "cat", "bird"]
    assert sorted((path.parent.name, label) for path, label in samples) == [("cat", 1), ("dog", 0), ("dog", 0)]
    data = load_image_folder_arrays(tree, CIFAR10, labels=["dog", "cat", "bird"])
    assert data.classes == ["dog", "cat", "bird"] and sorted(data.labels.tolist()) == [0, 0, 1]

    # no folder named as a label (ImageNet's wnid folders, labels from a class index): sorted order, as
    # torchvision's ImageFolder numbers them
    wnids = tmp_path / "wnids"
    make_image_folder(wnids, {"n02": [((8, 8), "RGB", "png")], "n01": [((8, 8), "RGB", "png")]})
    classes, samples = scan_labelled_folder(wnids, ["tench", "goldfish", "shark"])
    assert classes == ["tench", "goldfish", "shark"]
    assert sorted((path.parent.name, label) for path, label in samples) == [("n01", 0), ("n02", 1)]

    # some folders named as labels, some not: refused (the rest would be guessed), before any decoding
    (tree / "kat").mkdir()
    (tree / "kat" / "cut.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataLayoutError, match=r"class folders \['kat'\] are not among the model's 3 labels, while 2"):
        load_image_folder_arrays(tree, CIFAR10, labels=["dog", "cat", "bird"])
    # more folders than the model has classes, none named as a label
    with pytest.raises(DataLayoutError, match="has 2 class folders but the model scores 1 classes, and no folder"):
        scan_labelled_folder(wnids, ["tench"])


def test_corrupt_image_names_the_file(tmp_path):
    make_image_folder(tmp_path, {"a": [((32, 32), "RGB", "jpg")], "b": [((32, 32), "RGB", "jpg")]})
    good = (tmp_path / "b" / "0.jpg").read_bytes()
    (tmp_path / "b" / "0.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError, match=r"b/0\.jpg"):
        load_image_folder_arrays(tmp_path, CIFAR10)
    (tmp_path / "b" / "0.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match=r"b/0\.jpg: not a decodable image"):
        ImageFolderDataset(tmp_path, CIFAR10)[1]


def test_augmentation_is_pad_crop_flip():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = random_crop_flip(x, padding=4, generator=torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(len(x)):
        candidates = [
            (padded[i, :, dy : dy + 32, dx : dx + 32], flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
        ]
        matches = [flip for crop, flip in candidates if torch.equal(crop.flip(-1) if flip else crop, y[i])]
        assert matches, f"sample {i} is not a crop (+ optional flip) of the padded input"
        flips += matches[0]
    assert 10 < flips < 54  # about half flipped


def test_to_tensor_nchw_layout():
    arr = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    t = to_tensor_nchw(arr)
    assert t.shape == (2, 3, 4, 5) and t[1, 2, 3, 4] == arr[1, 3, 4, 2]


def test_pickle_of_wrong_kind_is_reported(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(io.BytesIO(b"garbage").getvalue())
    with pytest.raises(DataLayoutError, match="not a readable CIFAR-10 batch"):
        load_cifar10(tmp_path, "test")
