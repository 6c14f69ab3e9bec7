"""The shipped `ipx_update` script: validation and the simulated IPX configuration."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ipx_update.py"
CHANNEL = {
    "channel_id": "ESPN-HD",
    "name": "ESPN HD",
    "origin": "avcm",
    "pod_service": "pod-7",
    "compression_element": "enc-12",
    "valid": True,
}


class Ctx:
    def __init__(self, run_id: int = 1) -> None:
        self.run_id = run_id
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


@pytest.fixture(scope="module")
def ipx() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ipx_update_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ipx" / "config.json"
    monkeypatch.setenv("IPX_CONFIG_PATH", str(path))
    return path


def test_applies_a_channel(ipx: ModuleType, config: Path) -> None:
    ctx = Ctx(run_id=41)
    assert ipx.run(json.dumps(CHANNEL), ctx) == (3, "IPX updated: ESPN-HD → pod-7 / enc-12")
    stored = json.loads(config.read_text())
    assert stored["version"] == 1
    assert stored["channels"]["ESPN-HD"]["pod_service"] == "pod-7"
    assert stored["channels"]["ESPN-HD"]["run_id"] == 41
    assert ctx.lines and "ESPN-HD" in ctx.lines[0]


def test_applying_twice_changes_nothing(ipx: ModuleType, config: Path) -> None:
    ipx.run(json.dumps(CHANNEL), Ctx())
    code, feedback = ipx.run(json.dumps(CHANNEL), Ctx())
    assert (code, feedback) == (3, "IPX already up to date: ESPN-HD → pod-7 / enc-12")
    assert json.loads(config.read_text())["version"] == 1
    moved = {**CHANNEL, "pod_service": "pod-9"}
    assert ipx.run(json.dumps(moved), Ctx())[1] == "IPX updated: ESPN-HD → pod-9 / enc-12"
    assert json.loads(config.read_text())["version"] == 2


@pytest.mark.parametrize(
    ("command", "feedback"),
    [
        ("not json", "the command is not valid JSON (Expecting value at position 0)"),
        ("[1, 2]", "must be a JSON object describing a channel, not list"),
        ("{}", "the channel has no channel_id"),
        (json.dumps({**CHANNEL, "channel_id": "  "}), "the channel has no channel_id"),
        (
            json.dumps({k: v for k, v in CHANNEL.items() if k != "pod_service"}),
            "channel ESPN-HD: missing pod_service",
        ),
        (
            json.dumps({**CHANNEL, "compression_element": None}),
            "channel ESPN-HD: missing compression_element",
        ),
        (
            json.dumps({**CHANNEL, "compression_element": 12}),
            "channel ESPN-HD: compression_element must be a non-empty string",
        ),
        (
            json.dumps({**CHANNEL, "valid": False}),
            "channel ESPN-HD: the Channel Manager marked it invalid",
        ),
    ],
)
def test_invalid_input_fails_with_useful_feedback(
    ipx: ModuleType, config: Path, command: str, feedback: str
) -> None:
    code, text = ipx.run(command, Ctx())
    assert code == 2
    assert feedback in text
    assert not config.exists()


def test_a_corrupt_configuration_fails_the_run(ipx: ModuleType, config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("{ nope")
    code, feedback = ipx.run(json.dumps(CHANNEL), Ctx())
    assert code == 2
    assert feedback.startswith("channel ESPN-HD: cannot update the IPX configuration")
    assert config.read_text() == "{ nope"


def test_concurrent_updates_are_all_kept(ipx: ModuleType, config: Path) -> None:
    def update(i: int) -> None:
        channel = {**CHANNEL, "channel_id": f"CH-{i}"}
        assert ipx.run(json.dumps(channel), Ctx(i))[0] == 3

    threads = [threading.Thread(target=update, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = json.loads(config.read_text())
    assert len(stored["channels"]) == 16
    assert stored["version"] == 16
    assert [p.name for p in config.parent.iterdir() if p.name.startswith(".config-")] == []
