"""GTSRB's CSV layouts (the official release, torchvision's download) are checked before anything is decoded: a
missing class folder is an error naming it (torchvision would number the remaining folders in order and shift every
later label), and the test CSV must be there (found by the preflight check), have its ClassId column and list exactly
the test images on disk."""
import re

import pytest

from backdoor_repro.data import DatasetUnavailable, check_dataset_available, load_dataset
from backdoor_repro.datasets import DatasetIncomplete

from test_data_gtsrb import write_release_gtsrb, write_torchvision_gtsrb

LAYOUTS = {  # name: (writer, training folder, test CSV) under the data root
    "release": (write_release_gtsrb, "GTSRB/Final_Training/Images", "GT-final_test.csv"),
    "torchvision": (write_torchvision_gtsrb, "gtsrb/GTSRB/Training", "gtsrb/GT-final_test.csv"),
}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))


def _write(tmp_path, layout):
    writer, train, csv = LAYOUTS[layout]
    writer(tmp_path / "data", per_class=1)
    return tmp_path / "data", tmp_path / "data" / train, tmp_path / "data" / csv


def _refused(root, match, error=DatasetUnavailable):
    """Refused by the preflight check and by both splits' loads, with the same message."""
    with pytest.raises(error, match=match):
        check_dataset_available("gtsrb", root, download=False)
    for split in ("train", "test"):
        with pytest.raises(error, match=match):
            load_dataset("gtsrb", split, root)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_missing_class_folder_is_named_never_a_shift_of_labels(tmp_path, layout):
    root, train, _ = _write(tmp_path, layout)
    for f in (train / "00005").iterdir():
        f.unlink()
    (train / "00005").rmdir()
    _refused(root, r"has 42 class folders .* but gtsrb has 43 classes .*missing 00005")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_foreign_class_folder_is_named(tmp_path, layout):
    root, train, _ = _write(tmp_path, layout)
    (train / "00043").mkdir()
    _refused(root, "not gtsrb classes: 00043")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_truncated_test_csv_is_refused(tmp_path, layout):
    root, _, csv = _write(tmp_path, layout)
    csv.write_text("\n".join(csv.read_text().splitlines()[:11]) + "\n")  # header + 10 rows, as a cut-off download
    _refused(root, re.escape(f"{csv} has 10 rows") + r".* \d\d images have no row \(e\.g\. 00010\.ppm\)")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_test_csv_listing_an_absent_image_is_refused(tmp_path, layout):
    root, _, csv = _write(tmp_path, layout)
    (csv.parent / "GTSRB" / "Final_Test" / "Images" / "00003.ppm").unlink()  # beside the CSV in both fixtures
    _refused(root, r"00003\.ppm \(and 0 more\) is not there")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_test_csv_without_classid_names_the_file_and_the_column(tmp_path, layout):
    root, _, csv = _write(tmp_path, layout)
    csv.write_text("\n".join(line.rsplit(";", 1)[0] for line in csv.read_text().splitlines()) + "\n")  # the .test.csv
    _refused(root, re.escape(f"{csv} has no ClassId column (its columns: Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;"
                             "Roi.Y2)") + ".*GT-final_test.test.csv")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_missing_test_csv_is_found_by_the_preflight_check_with_the_three_ways(tmp_path, layout):
    root, _, csv = _write(tmp_path, layout)
    csv.unlink()
    with pytest.raises(DatasetIncomplete) as err:
        check_dataset_available("gtsrb", root, download=False)
    message = str(err.value)
    assert message.startswith(f"no GT-final_test.csv (the test labels, GTSRB_Final_Test_GT.zip) in {csv.parent}")
    assert "Provide it in one of three ways" in message and "--download" in message and "official release" in message
    assert ("GT-final_test.test.csv beside the images has no ClassId column" in message) == (layout == "release")
    with pytest.raises(DatasetIncomplete, match="no GT-final_test.csv"):
        load_dataset("gtsrb", "train", root)  # the check runs before either split is decoded


def test_a_classid_outside_the_43_classes_is_refused(tmp_path):
    root, _, csv = _write(tmp_path, "torchvision")
    lines = csv.read_text().splitlines()
    lines[4] = lines[4].rsplit(";", 1)[0] + ";43"
    csv.write_text("\n".join(lines) + "\n")
    _refused(root, r"ClassId '43' of 00003\.ppm is not a GTSRB class")


def test_a_release_class_csv_must_match_its_folder(tmp_path):
    root, train, _ = _write(tmp_path, "release")
    (train / "00007" / "00000_00000.ppm").rename(train / "00007" / "00009_00000.ppm")
    _refused(root, r"GT-00007\.csv lists 1 images, .*00007 holds 1 \.ppm files \(e\.g\. 00000_00000\.ppm, "
                   r"00009_00000\.ppm only in one of them\)")
    (train / "00007" / "00009_00000.ppm").rename(train / "00007" / "00000_00000.ppm")
    csv = train / "00008" / "GT-00008.csv"
    csv.write_text(csv.read_text().replace(";8\n", ";9\n"))  # a folder filed under the wrong class
    _refused(root, r"GT-00008\.csv gives 00000_00000\.ppm \(and 0 more\) another ClassId than its folder's \(8\)")


def test_missing_test_images_and_training_folders_are_named(tmp_path):
    root, train, csv = _write(tmp_path, "torchvision")
    images = csv.parent / "GTSRB" / "Final_Test" / "Images"
    for f in images.iterdir():
        f.unlink()
    images.rmdir()
    _refused(root, "(?s)" + re.escape(f"{images} (the test images of torchvision's GTSRB download") + ".*three ways",
             DatasetIncomplete)
    for d in sorted(train.rglob("*"), reverse=True):
        d.unlink() if d.is_file() else d.rmdir()
    train.rmdir()
    with pytest.raises(DatasetIncomplete, match=re.escape(f"{train} (the training images")):
        check_dataset_available("gtsrb", root, download=False)


def test_a_torchvision_copy_missing_a_split_is_left_to_the_download(tmp_path):
    """With download=True, torchvision fetches what its copy lacks, so the preflight check lets it through."""
    root, train, _ = _write(tmp_path, "torchvision")
    (root / "gtsrb" / "GT-final_test.csv").unlink()
    check_dataset_available("gtsrb", root, download=True)
