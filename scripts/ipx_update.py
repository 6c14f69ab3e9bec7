"""Apply a channel change to the (simulated) IPX configuration: the original's example job.

The Command is the channel as JSON, as the job's template `{{ data.channel | tojson }}`
renders it, e.g.::

    {"channel_id": "ESPN-HD", "name": "ESPN HD", "origin": "avcm",
     "pod_service": "pod-7", "compression_element": "enc-12", "valid": true}

The channel must carry `channel_id`, `pod_service` and `compression_element` as non-empty
strings and must not be marked invalid. The IPX configuration is a JSON file at
`$IPX_CONFIG_PATH` (default: `<tempdir>/jobmanager-ipx/config.json`), changed under an
exclusive lock and replaced atomically, so concurrent runs never lose an update and a reader
never sees half a file. Applying the same channel twice changes nothing (safe to retry).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

FAILED, SUCCEEDED = 2, 3
REQUIRED = ("pod_service", "compression_element")


class Context(Protocol):
    run_id: int

    def log(self, message: str) -> None: ...


class InvalidChannel(ValueError):
    """The Command does not describe a channel we can apply."""


def config_path() -> Path:
    configured = os.environ.get("IPX_CONFIG_PATH")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / "jobmanager-ipx" / "config.json"


def parse_channel(command: str) -> dict[str, Any]:
    """The channel in the Command, or InvalidChannel naming the problem."""
    try:
        channel = json.loads(command)
    except json.JSONDecodeError as exc:
        raise InvalidChannel(
            f"the command is not valid JSON ({exc.msg} at position {exc.pos}); "
            "expected the channel as a JSON object"
        ) from None
    if not isinstance(channel, dict):
        raise InvalidChannel(
            f"the command must be a JSON object describing a channel, not {type(channel).__name__}"
        )
    channel_id = channel.get("channel_id")
    if not isinstance(channel_id, str) or not channel_id.strip():
        raise InvalidChannel("the channel has no channel_id (a non-empty string is required)")
    for field in REQUIRED:
        value = channel.get(field)
        if value is None:
            raise InvalidChannel(f"channel {channel_id}: missing {field}")
        if not isinstance(value, str) or not value.strip():
            raise InvalidChannel(f"channel {channel_id}: {field} must be a non-empty string")
    if channel.get("valid") is False:
        raise InvalidChannel(
            f"channel {channel_id}: the Channel Manager marked it invalid; not applying it"
        )
    return channel


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"version": 0, "channels": {}}
    config = json.loads(text)
    if not isinstance(config, dict) or not isinstance(config.get("channels"), dict):
        raise ValueError(f"the IPX configuration at {path} is not in the expected shape")
    return config


def _write(path: Path, config: dict[str, Any]) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def apply(channel: dict[str, Any], path: Path, run_id: int) -> bool:
    """Map the channel to its pod service and compression element; False if already so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "name": channel.get("name"),
        "origin": channel.get("origin"),
        "pod_service": channel["pod_service"],
        "compression_element": channel["compression_element"],
    }
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = _read(path)
        current = config["channels"].get(channel["channel_id"]) or {}
        if all(current.get(key) == value for key, value in entry.items()):
            return False
        now = datetime.now(UTC).isoformat()
        config["channels"][channel["channel_id"]] = {**entry, "updated_at": now, "run_id": run_id}
        config["version"] = int(config.get("version", 0)) + 1
        config["updated_at"] = now
        _write(path, config)
        return True


def run(command: str, ctx: Context) -> tuple[int, str]:
    try:
        channel = parse_channel(command)
    except InvalidChannel as exc:
        return FAILED, str(exc)
    channel_id, pod, element = (
        channel["channel_id"],
        channel["pod_service"],
        channel["compression_element"],
    )
    path = config_path()
    try:
        changed = apply(channel, path, ctx.run_id)
    except (OSError, ValueError) as exc:
        return FAILED, f"channel {channel_id}: cannot update the IPX configuration: {exc}"
    ctx.log(f"IPX configuration {path}: {channel_id} → {pod} / {element}")
    if not changed:
        return SUCCEEDED, f"IPX already up to date: {channel_id} → {pod} / {element}"
    return SUCCEEDED, f"IPX updated: {channel_id} → {pod} / {element}"
