"""One walker and one readability check for every image folder the package reads."""
import os

import pytest
from PIL import Image

from modal_vlm._files import find_images, unreadable_reason, write_atomic


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "images"
    for folder in ("cats", "cats/deeper", ".thumbnails", "project", "elsewhere"):
        (root / folder).mkdir(parents=True)
    for name in ("cats/b.png", "cats/deeper/a.JPG", "a.png", ".hidden.png", "._fork.jpg", ".thumbnails/t.png",
                 "project/p.png"):
        Image.new("RGB", (4, 4)).save(root / name, format="PNG")
    (root / "notes.txt").write_text("not an image")
    os.symlink(tmp_path, root / "loop")                    # a link to a folder: not followed
    os.symlink(root / "missing.png", root / "dangling.png")  # leads nowhere: listed
    return root


def test_find_images_skips_hidden_files_and_folders_and_does_not_follow_folder_links(tree):
    found = [os.path.relpath(path, tree) for path in find_images(tree)]
    assert found == ["a.png", "cats/b.png", "cats/deeper/a.JPG", "dangling.png", "project/p.png"]
    assert find_images(tree) == sorted(find_images(tree))


def test_find_images_leaves_out_excluded_folders(tree):
    found = [os.path.relpath(path, tree) for path in find_images(tree, exclude=[tree / "project"])]
    assert "project/p.png" not in found and "cats/b.png" in found


def test_unreadable_reason_reads_the_header_or_decodes(tree, tmp_path):
    assert unreadable_reason(tree / "a.png") is None
    noise = Image.frombytes("L", (64, 64), os.urandom(64 * 64))  # incompressible: a cut file loses pixels
    noise.save(tmp_path / "noise.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((tmp_path / "noise.png").read_bytes()[:2000])
    assert unreadable_reason(truncated) is None                # the header is fine
    assert unreadable_reason(truncated, decode=True)           # the pixels are not
    assert unreadable_reason(tree / "dangling.png").startswith("[Errno 2]")
    assert unreadable_reason(tree / "notes.txt") == "cannot identify image file"  # no path repeated


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "settings.json"
    write_atomic(path, b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["settings.json"]
