"""Time to the first batch of ``modal-vlm label`` on a big folder, from the command's start.

The app serves the first batch once the first images of the folder's random order are
encoded (``modal_vlm.labeling.session.FIRST_POOL``, or ``FIRST_POOL_SECONDS`` of encoding) and
encodes the rest in the background. Two folders, made under a temporary directory and deleted
afterwards (never in the project):

* ``cifar``: ``--n-cifar`` files (20,000) copied from the shared CIFAR-10 images (32 x 32 JPEG),
  as distinct files (a JPEG comment makes each copy's bytes, and so its fingerprint, its own);
* ``photos``: ``--n-photos`` 12-megapixel JPEG photos (500), generated from CIFAR-10 images as
  ``bench_encode_throughput.py`` does (``_images.py``), as distinct files.

For each: a real ``modal-vlm label`` server (the app's defaults: the offline reference model,
CEC, the linear head) on a new project; the clock runs from starting the process to the first
batch in ``/api/state``, and on to every image being in the pool (the background encoding
done) when ``--until-encoded`` is given. The worker's phases are sampled on the way.

    python benchmarks/bench_first_batch.py [--folders cifar photos] [--n-cifar 20000]
        [--n-photos 500] [--until-encoded] [--out benchmarks/results/first_batch.md]

Target (issue 27): the first batch on the 20,000-image folder within 60 s. Run it alone.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _images import cifar_files, distinct_copies, write_large_photos
from _protocol import ROOT
from bench_label_latency import POLL, cpu_seconds, start
from modal_vlm.labeling import DEFAULT_MODEL, DEFAULT_STRATEGY
from modal_vlm.labeling.session import FIRST_POOL, FIRST_POOL_SECONDS

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_folder(kind, n, folder: Path) -> list[str]:
    """The image folder of one arm (see the module docstring)."""
    if kind == "cifar":
        return distinct_copies(cifar_files(min(n, 10_000), "train"), n, folder)
    photos = write_large_photos(cifar_files(8, "test"), folder / ".sources")   # hidden: the scan skips it
    return distinct_copies(photos, n, folder)


def time_first_batch(images: Path, project: Path, until_encoded: bool) -> dict:
    server, url, started = start(images, project, CLASSES)
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            served = time.perf_counter() - started
            phases, first = [], None
            while True:
                state = client.get("api/state").json()
                worker = state["worker"]
                now = time.perf_counter() - started
                if not phases or phases[-1][0] != worker["phase"]:
                    phases.append((worker["phase"], now))
                if worker["phase"] == "error":
                    raise RuntimeError(worker["message"])
                if first is None and state["batch"] is not None:
                    first = {"seconds": now, "encoded": worker["encoded"], "readable": worker["readable"],
                             "cpu": cpu_seconds(server.pid)}
                    if not until_encoded:
                        break
                if first is not None and worker["encoded"] >= worker["readable"]:
                    break
                time.sleep(POLL)
            return {**first, "served": served, "all_encoded": now if until_encoded else None, "phases": phases}
    finally:
        server.terminate()
        server.wait(60)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="+", default=["cifar", "photos"], choices=["cifar", "photos"])
    parser.add_argument("--n-cifar", type=int, default=20_000)
    parser.add_argument("--n-photos", type=int, default=500)
    parser.add_argument("--until-encoded", action="store_true",
                        help="also time the background encoding of the whole folder")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "first_batch.md"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="modal-vlm-first-batch-"))
    try:
        for kind in args.folders:
            n = args.n_cifar if kind == "cifar" else args.n_photos
            made = time.perf_counter()
            make_folder(kind, n, work / kind)
            print(f"{kind}: {n} files made in {time.perf_counter() - made:.0f} s", flush=True)
            result = time_first_batch(work / kind, work / f"project-{kind}", args.until_encoded)
            rows.append({"kind": kind, "n": n, **result})
            print(f"{kind}: first batch after {result['seconds']:.1f} s ({result['encoded']} of "
                  f"{result['readable']} images encoded)", flush=True)
            shutil.rmtree(work / kind, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    describe = {"cifar": "CIFAR-10 copies (32 x 32 JPEG)", "photos": "12-megapixel JPEG photos (4000 x 3000)"}
    lines = [
        "# Labeling app: time to the first batch on a big folder",
        "",
        f"`modal-vlm label` with the app's defaults ({DEFAULT_MODEL}, {DEFAULT_STRATEGY}, the linear head) on a new "
        f"project; the first batch is chosen among the first {FIRST_POOL} images of the folder's random order (or "
        f"those encoded after {FIRST_POOL_SECONDS:.0f} s), the rest is encoded in the background. Clock from starting "
        f"the process. Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
        f"{os.cpu_count()} cores.",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/bench_first_batch.py', *sys.argv[1:]])}` (run it alone).",
        "",
        "| folder | images | server up (s) | first batch (s) | server CPU until then (s) | encoded then "
        "| every image in the pool (s) | phases (s from start) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        phases = ", ".join(f"{phase} {at:.0f}" for phase, at in row["phases"])
        every = f"{row['all_encoded']:.0f}" if row["all_encoded"] is not None else "not timed"
        cpu = "" if row["cpu"] is None else f"{row['cpu']:.1f}"
        lines.append(f"| {describe[row['kind']]} | {row['n']} | {row['served']:.1f} | {row['seconds']:.1f} | {cpu} | "
                     f"{row['encoded']} | {every} | {phases} |")
    lines += ["", "Target: the first batch on the 20,000-image folder within 60 s. \"server CPU\": CPU seconds of the "
              "server process (all threads) from its start to the first batch (/proc): on 2 idle cores the wall "
              "time lies between half of it and all of it.", ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
