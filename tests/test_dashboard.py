"""optuna-dashboard reads a sweep's study as the README says: `optuna-dashboard
sqlite:///STORAGE/NAME/optuna.db --host 127.0.0.1`. The dashboard runs as a user starts it (its
console script, on 127.0.0.1 and a free port) on a copy of a finished sweep's optuna.db; its JSON
API (optuna_dashboard/_app.py: /api/studies, /api/studies/<id>) must give back every trial with
the state, value and intermediate values `optuna.load_study` reads from the same file."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
from support import SWEEP_SAMPLES

STARTUP_DEADLINE_S = 300  # a generous bound on a loaded machine; only a hang reaches it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _wait_for(url: str, server: subprocess.Popen, log: Path) -> Any:
    """The JSON at `url` once the server answers; fails if the server exits first."""
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while True:
        try:
            return _get(url)
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None:
                pytest.fail(f"optuna-dashboard exited with {server.returncode}: {log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"optuna-dashboard did not answer {url}: {log.read_text()}")
            time.sleep(0.5)


@pytest.mark.ray  # starts a server (and the shared sweep starts Ray)
def test_optuna_dashboard_serves_the_sweeps_trials(sweep, tmp_path):
    db = tmp_path / "optuna.db"
    shutil.copy(sweep["dir"] / "optuna.db", db)
    port = _free_port()
    log = tmp_path / "dashboard.log"
    exe = Path(sys.executable).with_name("optuna-dashboard")
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(exe), f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        summaries = _wait_for(base, server, log)["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["small"]
        served = _get(f"{base}/{summaries[0]['study_id']}")["trials"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    study = optuna.load_study(study_name="small", storage=f"sqlite:///{db}")
    assert len(study.trials) == SWEEP_SAMPLES
    assert any(t.intermediate_values for t in study.trials)
    assert sorted(t["number"] for t in served) == [t.number for t in study.trials]
    for trial in served:
        expected = study.trials[trial["number"]]
        assert trial["state"] == expected.state.name.capitalize()
        assert trial.get("values") == expected.values
        steps = {v["step"]: v["value"] for v in trial["intermediate_values"]}
        assert steps == expected.intermediate_values
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert attrs["tune_trial_id"] == expected.user_attrs["tune_trial_id"]
