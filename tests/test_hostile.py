"""Issue #15: the derain command under hostile input. One bad photo never ends a batch.

Each test is one case of the issue: a failure is one line naming the input
photo, the other photos are done, a summary is printed, and nothing
half-written is left or replaces a good output.
"""

import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from conftest import random_image
from test_inference import tiny_generator

from keras_derain.inference import Derainer
from keras_derain.predict import main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_generator().save(path)
    return path


def save(path, height, width, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_image(height, width, seed=seed)).save(path)
    return path


def run(capsys, *argv):
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def failed_lines(err):
    return [line for line in err.splitlines() if line.startswith("failed: ")]


def files_in(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@contextmanager
def mounted_tmpfs(folder, options):
    """A tmpfs at ``folder`` (root only), or skip the test."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_one_batch_of_bad_photos_goes_on(model, tmp_path, capsys, monkeypatch):
    """Over the cap, 1x1, truncated, out of memory while deraining: each named; the good photo is written."""
    photos = tmp_path / "photos"
    save(photos / "a_good.png", 30, 40)
    save(photos / "b_huge.png", 60, 80)  # 4,800 pixels, over --max-pixels 3000
    save(photos / "c_dot.png", 1, 1)
    truncated = save(photos / "d_truncated.png", 40, 40)
    truncated.write_bytes(truncated.read_bytes()[:200])
    save(photos / "e_memory.png", 20, 20)
    derain = Derainer.derain

    def derain_or_run_out(self, image):
        if "e_memory" in str(image):
            raise MemoryError("Unable to allocate 5.6 GiB for an array with shape (13000, 13000, 3)")
        return derain(self, image)

    monkeypatch.setattr(Derainer, "derain", derain_or_run_out)
    status, out, err = run(capsys, photos, "--model", model, "--out", tmp_path / "out", "--max-pixels", "3e3")
    assert status == 1
    failed = failed_lines(err)
    assert len(failed) == 4
    for line, name, reason in zip(failed, ["b_huge", "c_dot", "d_truncated", "e_memory"],
                                  ["over the cap of 3,000", "too small", "unreadable or corrupt", "out of memory"]):
        assert f"failed: {photos / name}.png: " in line and reason in line
    assert files_in(tmp_path / "out") == ["a_good_derained.png"]
    assert out.splitlines()[-1] == f"derained 1 of 5 photo(s) into {tmp_path / 'out'}; 4 failed"


def test_disk_full_names_the_photo_and_leaves_no_partial_file(model, tmp_path, capsys):
    photos = tmp_path / "photos"
    save(photos / "a_small.png", 8, 8)
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(photos / "b_noise.png")  # about 120 kB as PNG, the derained one too
    with mounted_tmpfs(tmp_path / "small_disk", "size=64k") as out:
        status, _, err = run(capsys, photos, "--model", model, "--out", out)
        written = files_in(out)
        hidden = [name for name in os.listdir(out) if name.startswith(".")]
    assert status == 1
    [line] = failed_lines(err)
    assert line.startswith(f"failed: {photos / 'b_noise.png'}: cannot write {out / 'b_noise_derained.png'}")
    assert "No space left on device" in line
    assert written == ["a_small_derained.png"] and hidden == []


def test_unwritable_out_is_found_before_any_work(model, tmp_path, capsys, monkeypatch):
    save(tmp_path / "photo.png", 20, 20)
    monkeypatch.setattr(Derainer, "__init__", lambda *args, **kwargs: pytest.fail("loaded a model"))
    (tmp_path / "a_file").write_text("not a folder")
    status, _, err = run(capsys, tmp_path / "photo.png", "--model", model, "--out", tmp_path / "a_file" / "out")
    assert status == 2 and err.strip().splitlines() == [
        f"error: --out {tmp_path / 'a_file' / 'out'}: cannot write there (not a folder: {tmp_path / 'a_file'})"
    ]
    with mounted_tmpfs(tmp_path / "read_only", "ro,size=64k") as out:
        status, _, err = run(capsys, tmp_path / "photo.png", "--model", model, "--out", out)
    assert status == 2
    assert err.strip().splitlines() == [f"error: --out {out}: cannot write there (Read-only file system)"]


def test_out_in_the_input_folder_and_reruns(model, tmp_path, capsys):
    """Outputs are never inputs; a rerun is refused unless --skip-existing or --overwrite says what to do."""
    save(tmp_path / "one.png", 20, 24)
    save(tmp_path / "two.jpg", 18, 22)
    assert run(capsys, tmp_path, "--model", model, "--out", tmp_path)[0] == 0
    assert files_in(tmp_path) == ["one.png", "one_derained.png", "two.jpg", "two_derained.png"]
    before = (tmp_path / "one_derained.png").stat().st_mtime_ns

    status, _, err = run(capsys, tmp_path, "--model", model, "--out", tmp_path)
    assert status == 2 and "2 output(s) already there" in err and "--overwrite" in err
    (tmp_path / "two_derained.png").unlink()
    status, out, _ = run(capsys, tmp_path, "--model", model, "--out", tmp_path, "--skip-existing")
    assert status == 0 and out.splitlines()[-1] == (
        f"derained 1 of 2 photo(s) into {tmp_path}; 1 kept (output already there); "
        "1 other entry skipped (--verbose lists them)"
    )
    assert (tmp_path / "one_derained.png").stat().st_mtime_ns == before
    status, out, _ = run(capsys, tmp_path, "--model", model, "--out", tmp_path, "--overwrite", "--verbose")
    assert status == 0 and (tmp_path / "one_derained.png").stat().st_mtime_ns > before
    assert f"skipped: {tmp_path / 'one_derained.png'}: an output of this command" in out
    assert files_in(tmp_path) == ["one.png", "one_derained.png", "two.jpg", "two_derained.png"]


def test_folders_recursion_and_skipped_entries(model, tmp_path, capsys):
    photos = tmp_path / "photos"
    save(photos / "top.png", 20, 20)
    save(photos / "trip" / "day1" / "beach.png", 20, 30)
    save(photos / "trip" / "top.png", 16, 16)  # same name as photos/top.png, another folder
    (photos / "notes.txt").write_text("not an image")
    (photos / ".hidden.png").write_bytes(b"")
    os.symlink("..", photos / "trip" / "loop")
    os.symlink("missing.png", photos / "broken.png")
    out = tmp_path / "out"

    status, stdout, _ = run(capsys, photos, "--model", model, "--out", out)
    assert status == 0 and files_in(out) == ["top_derained.png"]
    assert stdout.splitlines()[-1].endswith("derained 1 of 1 photo(s) into " + f"{out}; 4 other entries skipped "
                                            "(--verbose lists them)")

    status, stdout, err = run(capsys, photos, photos / "top.png", "--model", model, "--out", out, "-r", "-v",
                              "--overwrite")
    assert status == 0 and failed_lines(err) == []
    assert files_in(out) == ["top_derained.png", "trip/day1/beach_derained.png", "trip/top_derained.png"]
    skipped = {line.split(": ")[1] for line in stdout.splitlines() if line.startswith("skipped: ")}
    names = (".hidden.png", "broken.png", "notes.txt", "trip/loop", "top.png")
    assert skipped == {str(photos / name) for name in names}
    assert stdout.splitlines()[-1] == f"derained 3 of 3 photo(s) into {out}; 5 other entries skipped"


def test_stale_temporaries_of_a_killed_run_are_removed(model, tmp_path, capsys):
    save(tmp_path / "photo.png", 20, 20)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # its process id is now free: the writer of this temporary is gone
    stale = out / f".photo_derained.tmp-{dead.pid}-0123abcd.png"
    live = out / f".other_derained.tmp-{os.getpid()}-0123abcd.png"
    for temporary in (stale, live):
        temporary.write_bytes(b"half a png")
    assert run(capsys, tmp_path / "photo.png", "--model", model, "--out", out)[0] == 0
    assert not stale.exists() and live.exists()
    assert files_in(out) == [live.name, "photo_derained.png"]


def test_ctrl_c_stops_with_one_line(model, tmp_path, capsys, monkeypatch):
    for index in range(3):
        save(tmp_path / "photos" / f"p{index}.png", 20, 20, seed=index)
    derain = Derainer.derain

    def interrupted_at_second(self, image):
        if "p1" in str(image):
            raise KeyboardInterrupt
        return derain(self, image)

    monkeypatch.setattr(Derainer, "derain", interrupted_at_second)
    status, _, err = run(capsys, tmp_path / "photos", "--model", model, "--out", tmp_path / "out")
    assert status == 130
    assert err.strip().splitlines() == [f"interrupted: 1 photo(s) derained into {tmp_path / 'out'}; none half-written"]
    assert os.listdir(tmp_path / "out") == ["p0_derained.png"]


def test_quiet_on_a_pipe(model, tmp_path):
    """No error-level TensorFlow lines and no progress bar (colour codes) when the output is not a terminal."""
    save(tmp_path / "photo.png", 20, 20)
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_derain.predict", str(tmp_path / "photo.png"), "--model", str(model),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=environment, cwd=REPO_ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"model: {model}; 1 photo(s) -> {tmp_path / 'out'}", f"derained 1 of 1 photo(s) into {tmp_path / 'out'}"
    ]
    assert not [line for line in result.stderr.splitlines() if line.startswith(("E0000", "W0000", "Traceback"))]
