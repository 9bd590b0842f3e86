"""``modal-vlm label``, ``label export`` and ``label import`` from the command line."""
import csv
import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import SHAPES, label_batch

from modal_vlm import cli

pytest.importorskip("fastapi", reason="the labeling app needs the 'app' extra: pip install modal-vlm[app]")
httpx = pytest.importorskip("httpx")


def test_help_lists_the_three_label_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["label", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: modal-vlm label [-h] --project DIR")
    assert "usage: modal-vlm label export" in out and "usage: modal-vlm label import" in out
    with pytest.raises(SystemExit):
        cli.main(["label", "export", "--what", "everything", "--project", "p"])
    assert "invalid choice: 'everything'" in capsys.readouterr().err


@pytest.fixture
def labeled_project(shapes, make_session, client_for):
    """A project with one finished batch (true labels) and the second one open."""
    folder, truth = shapes
    project, store, worker = make_session(folder)
    label_batch(client_for(project, store, worker), truth)
    worker.wait_idle(120)
    return project, store, truth


def test_export_everything(labeled_project, tmp_path, capsys):
    project, store, truth = labeled_project
    p = str(project.root)
    assert cli.main(["label", "export", "--project", p]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6 and all(row["label"] == truth[row["path"]] for row in rows)
    assert cli.main(["label", "export", "--project", p, "--format", "json", "--out", str(tmp_path / "l.json")]) == 0
    assert len(json.loads((tmp_path / "l.json").read_text())["events"]) == 6
    out = tmp_path / "predictions.csv"
    assert cli.main(["label", "export", "--project", p, "--what", "predictions", "--out", str(out)]) == 0
    predictions = list(csv.DictReader(out.open()))
    assert len(predictions) == len(truth) and {row["model_round"] for row in predictions} == {"1"}
    assert cli.main(["label", "export", "--project", p, "--what", "model", "--out", str(tmp_path / "m.pkl")]) == 0
    assert "trained after 1 batches on 6 labels" in capsys.readouterr().err
    assert pickle.loads((tmp_path / "m.pkl").read_bytes()).class_names == list(SHAPES)
    assert cli.main(["label", "export", "--project", p, "--what", "label-studio"]) == 0
    tasks = json.loads(capsys.readouterr().out)
    assert [t["data"]["modal_vlm_path"] for t in tasks] == [i["path"] for i in store.batch()["items"]]
    assert cli.main(["label", "export", "--project", p, "--what", "label-studio", "--batch", "1",
                     "--url-prefix", "http://files/"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["data"]["image"].startswith("http://files/")
    assert cli.main(["label", "export", "--project", p, "--what", "label-studio-config"]) == 0
    assert "<Choice value=\"none of these classes\"/>" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--what", "model"], "--what model needs --out FILE"),
    (["--what", "predictions", "--format", "json"], "--format applies to --what labels only"),
    (["--what", "label-studio", "--batch", "9"], "no batch with id 9"),
])
def test_export_errors(labeled_project, capsys, extra, message):
    project, _, _ = labeled_project
    assert cli.main(["label", "export", "--project", str(project.root), *extra]) == 2
    assert message in capsys.readouterr().err


def test_export_of_a_directory_without_project(tmp_path, capsys):
    assert cli.main(["label", "export", "--project", str(tmp_path)]) == 2
    assert "holds no labeling project" in capsys.readouterr().err


def test_import_label_studio_file(labeled_project, tmp_path, capsys):
    project, store, truth = labeled_project
    batch = store.batch()
    export = [{"id": n, "data": {"image": f"/data/local-files/?d={item['path']}"},
               "annotations": [{"result": [{"value": {"choices": [truth[item["path"]]]}}]}]}
              for n, item in enumerate(batch["items"])]
    file = tmp_path / "export.json"
    file.write_text(json.dumps(export))
    assert cli.main(["label", "import", str(file), "--project", str(project.root)]) == 0
    assert "imported 6 labels" in capsys.readouterr().out
    assert sum(store.counts(SHAPES)["per_class"].values()) == 12
    file.write_text("{not json")
    assert cli.main(["label", "import", str(file), "--project", str(project.root)]) == 2
    assert "is not JSON" in capsys.readouterr().err


def test_port_in_use_is_an_error(shapes, tmp_path, capsys):
    folder, _ = shapes
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["label", str(folder), "--classes", *SHAPES, "--project", str(tmp_path / "p"),
                "--model", "tiny-vit", "--port", str(port)]
        assert cli.main(argv) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_one_server_per_project(shapes, tmp_path, capsys):
    from modal_vlm.labeling import open_project
    from modal_vlm.labeling.server import _lock_project

    folder, _ = shapes
    project, _ = open_project(tmp_path / "p", folder, SHAPES, model="tiny-vit")
    lock = _lock_project(project)        # as a running server holds it
    try:
        assert cli.main(["label", "--project", str(tmp_path / "p"), "--port", "0"]) == 2
        assert "another modal-vlm label server is running on" in capsys.readouterr().err
    finally:
        lock.close()


def test_a_non_local_host_requires_the_printed_token_and_ctrl_c_stops(shapes, tmp_path):
    folder, _ = shapes
    command = [sys.executable, "-m", "modal_vlm.cli", "label", str(folder), "--classes", *SHAPES,
               "--project", str(tmp_path / "p"), "--model", "tiny-vit", "--host", "0.0.0.0", "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline, url = time.monotonic() + 120, None
        while url is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            assert line, "the server exited before printing its URL"
            if line.startswith("Open http://"):
                url = line.split()[1]
        port, token = int(url.split(":")[2].split("/")[0]), url.split("?token=")[1]
        assert len(token) >= 32
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as client:
            assert client.get("/").status_code == 403
            assert client.get("/api/state", params={"token": token[:-1]}).status_code == 403
            assert client.get("/images/1").status_code == 403
            assert client.get("/", params={"token": token}).status_code == 200
            assert client.get("/images/1", params={"token": token}).status_code == 200
            assert client.get("/", params={"token": token}, headers={"host": "labels.example:1"}).status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0
    assert "stopped; run the same command to resume" in out and "Traceback" not in out
