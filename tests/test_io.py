"""Atomic writes: a failed or killed writer leaves the old file or nothing, never a partial file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from featurenerf.io import atomic_save_via, atomic_write, atomic_write_bytes, atomic_write_json


class Boom(RuntimeError):
    pass


def test_atomic_write_success_text_and_binary(tmp_path):
    target = tmp_path / "deeper" / "out.txt"  # parent folders are created
    with atomic_write(target, "w") as f:
        f.write("hello\n")
    assert target.read_text() == "hello\n"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary left


def test_atomic_write_json_round_trips(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"psnr": 23.17, "views": [1, 2]})
    assert json.loads(target.read_text()) == {"psnr": 23.17, "views": [1, 2]}
    assert target.read_text().endswith("}\n")


@pytest.mark.parametrize("exc", [Boom("body failed"), KeyboardInterrupt()])
def test_failed_body_leaves_no_file_and_no_temporary(tmp_path, exc):
    target = tmp_path / "new.bin"
    with pytest.raises(type(exc)), atomic_write(target) as f:
        f.write(b"partial")
        raise exc
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_body_leaves_existing_file_untouched(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text('{"old": true}')
    with pytest.raises(Boom), atomic_write(target, "w") as f:
        f.write('{"new": ')
        raise Boom("serialiser failed")
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_atomic_save_via_keeps_suffix_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "image.png"
    seen: list[str] = []

    def save(path: str) -> None:
        seen.append(path)
        Path(path).write_bytes(b"png bytes")

    atomic_save_via(target, save)
    assert target.read_bytes() == b"png bytes"
    # The saver sees a temporary in the same folder whose name still ends in .png (format detection).
    assert Path(seen[0]).parent == tmp_path and seen[0].endswith(".png") and seen[0] != str(target)

    def failing(path: str) -> None:
        Path(path).write_bytes(b"half")
        raise Boom("encoder crashed")

    with pytest.raises(Boom):
        atomic_save_via(target, failing)
    assert target.read_bytes() == b"png bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["image.png"]


# A writer that completes ``complete`` versions of the target ("<n>:" + 200 kB of one letter), then
# starts one more and keeps writing it in flushed chunks until it is killed. It prints a line when the
# unfinished write has started, so the parent kills it mid-write without guessing at timings.
_STUCK_WRITER = r"""
import sys, time
from featurenerf.io import atomic_write
target, complete = sys.argv[1], int(sys.argv[2])
for n in range(complete + 1):
    letter = b"AB"[n % 2 : n % 2 + 1]
    with atomic_write(target, "wb") as f:
        f.write(str(n).encode() + b":")
        for _ in range(50):
            f.write(letter * 4000)
        if n == complete:
            f.flush()
            print("writing", flush=True)
            while True:
                f.write(letter * 4000)
                f.flush()
                time.sleep(0.001)
"""

# A writer that rewrites the target forever with complete versions, for kills at arbitrary instants.
_LOOP_WRITER = r"""
import sys
from featurenerf.io import atomic_write
target, n = sys.argv[1], 0
print("started", flush=True)
while True:
    letter = b"AB"[n % 2 : n % 2 + 1]
    with atomic_write(target, "wb") as f:
        f.write(str(n).encode() + b":")
        for _ in range(50):
            f.write(letter * 4000)
            f.flush()
    n += 1
"""
_PAYLOAD = 50 * 4000


def _check_complete(target: Path) -> None:
    data = target.read_bytes()
    head, _, body = data.partition(b":")
    letter = b"AB"[int(head) % 2 : int(head) % 2 + 1]
    assert body == letter * _PAYLOAD, f"partial file: {len(body)} of {_PAYLOAD} bytes"


def _start(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=env)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.stdout.close()


@pytest.mark.parametrize("complete", [0, 2])
def test_sigkilled_writer_never_leaves_partial_target(tmp_path, complete):
    target = tmp_path / "out.bin"
    proc = _start(_STUCK_WRITER, str(target), str(complete))
    try:
        assert proc.stdout.readline().strip() == "writing"
        temporaries = [p for p in tmp_path.iterdir() if p.name != "out.bin"]
        assert len(temporaries) == 1 and temporaries[0].stat().st_size > _PAYLOAD  # mid-write
    finally:
        _kill(proc)
    if complete == 0:
        # Killed during the first write: nothing at the target (only the orphaned temporary).
        assert not target.exists()
    else:
        # Killed during a later write: the previous complete version is there, byte for byte.
        _check_complete(target)
        assert target.read_bytes().startswith(f"{complete - 1}:".encode())


def test_sigkill_at_arbitrary_instants(tmp_path):
    target = tmp_path / "out.bin"
    for delay in (0.0, 0.013, 0.031, 0.057, 0.09):
        proc = _start(_LOOP_WRITER, str(target))
        try:
            assert proc.stdout.readline().strip() == "started"
            time.sleep(delay)
        finally:
            _kill(proc)
        if target.exists():  # absent only if killed before the first version completed
            _check_complete(target)
