"""Progress on a terminal: encoding and training bars when they take over 2 s, silence in a
pipe; the runner names the phase in progress."""
import os
import subprocess
import sys
import textwrap

import pytest

from modal_vlm.experiment import run_active_learning

#: A fit that takes over 2 s whatever the machine: each epoch sleeps 0.15 s.
SLOW_FIT = textwrap.dedent("""
    import time
    import numpy as np
    from skorch.callbacks import Callback
    from modal_vlm import {cls}

    class Slow(Callback):
        def on_epoch_end(self, net, **kwargs):
            time.sleep(0.15)

    X = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    clf = {cls}(["cat", "dog"], model_name="tiny-vit", max_epochs=20, callbacks=[Slow()], random_state=0,
              **{{"n_iter_no_change": None}} if "{cls}" == "ClipPromptClassifier" else {{}})
    clf.fit(X, np.arange(8) % 2)
    print("fitted")
""")


def run_in_terminal(code: str) -> str:
    """Output of ``python -c code`` run on a pseudo-terminal of 120 columns."""
    pty = pytest.importorskip("pty", reason="pseudo-terminals are POSIX-only")
    import fcntl
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", code])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out = bytearray()
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out.extend(data)
    os.waitpid(pid, 0)
    return out.decode(errors="replace")


def test_a_long_fit_shows_its_epochs_on_a_terminal_only():
    # one learner in subprocesses (each imports torch); the linear head's bar is the same code
    cls, label = "ClipLinearProbe", "training linear head"
    code = SLOW_FIT.format(cls=cls)
    terminal = run_in_terminal(code)
    assert "fitted" in terminal and label in terminal and "20/20" in terminal
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert piped.stdout.strip() == "fitted" and label not in piped.stderr


def test_the_loop_reports_each_phase(make_clf, images):
    X, y = images
    phases = []
    run_active_learning(make_clf(max_epochs=1), "entropy", X[:9], y[:9], X[9:], y[9:], rounds=2,
                        random_state=0, on_phase=phases.append)
    assert phases == ["encode", "evaluate", "query", "train", "evaluate", "query", "train", "evaluate"]
