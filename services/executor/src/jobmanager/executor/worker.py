"""A long-lived worker process that runs Python scripts for the executor (child side).

Started by the pool as ``python -m jobmanager.executor.worker`` in its own process group. It
reads one request frame at a time on stdin, imports the script by path (cached by path and
mtime), calls ``run(command, ctx)`` and answers one frame on stdout. A frame is a 4-byte
big-endian length followed by that many bytes of UTF-8 JSON.

Only the standard library is imported here, so that every worker stays small in memory. The
protocol owns private duplicates of the original stdin/stdout descriptors; descriptors 0 and 1
are re-pointed at /dev/null and stderr, so neither a script's prints nor the output of its
child processes can corrupt the frames.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import sys
import traceback
from collections.abc import Awaitable, Mapping
from contextlib import suppress
from types import ModuleType
from typing import IO, Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
FAILED, SUCCEEDED = 2, 3
_EXPECTED = "expected (result, feedback) with result 2 (Failed) or 3 (Succeeded)"


def encode_frame(payload: Mapping[str, Any]) -> bytes:
    """One protocol frame holding `payload` as JSON."""
    body = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    return HEADER.pack(len(body)) + body


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise EOFError("the executor closed the pipe in the middle of a frame")
        data += more
    return data


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next frame from a blocking stream, or None at a clean end of input."""
    header = _read_exact(stream, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the limit")
    body = _read_exact(stream, size) if size else b""
    if body is None:
        raise EOFError("the executor closed the pipe in the middle of a frame")
    value = json.loads(body)
    if not isinstance(value, dict):
        raise ValueError("a frame must hold a JSON object")
    return value


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code(value: object) -> int | None:
    # bool is an int subclass; True must not pass for 1 and False for 0.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value) if int(value) in (FAILED, SUCCEEDED) else None


def normalise_result(value: object) -> tuple[int, str]:
    """Turn whatever `run()` returned into (result code, feedback).

    Accepted: a ``(code, feedback)`` tuple or list, an object with ``result`` and ``feedback``
    attributes, a mapping with those keys, or a bare code (``ResultCode`` or int). The code
    must be 2 or 3; anything else is a failure whose feedback explains the bad return value.
    """
    code: object
    feedback: object = ""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            return FAILED, f"bad return value from run(): {_short(value)}; {_EXPECTED}"
        code, feedback = value
    elif isinstance(value, Mapping):
        if "result" not in value:
            return FAILED, f"bad return value from run(): {_short(value)}; {_EXPECTED}"
        code, feedback = value["result"], value.get("feedback", "")
    elif isinstance(value, int):
        code = value
    elif hasattr(value, "result"):
        code, feedback = value.result, getattr(value, "feedback", "")
    else:
        return FAILED, f"bad return value from run(): {_short(value)}; {_EXPECTED}"
    checked = _code(code)
    if checked is None:
        return FAILED, f"bad result code from run(): {_short(code)}; {_EXPECTED}"
    return checked, "" if feedback is None else str(feedback)


class OutputTail(io.TextIOBase):
    """A text stream that keeps only the last `limit` characters written to it."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = max(1, limit)
        self.dropped = 0
        self._parts: list[str] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        # Trimming only when twice over the limit keeps a flood of small prints linear.
        if self._size > 2 * self.limit:
            self._compact()
        return len(text)

    def _compact(self) -> None:
        joined = "".join(self._parts)
        keep = joined[-self.limit :]
        self.dropped += len(joined) - len(keep)
        self._parts, self._size = [keep], len(keep)

    def getvalue(self) -> str:
        self._compact()
        if not self.dropped:
            return self._parts[0]
        return f"[… {self.dropped} characters omitted]\n{self._parts[0]}"


class Context:
    """What a script's ``run(command, ctx)`` receives besides the command."""

    def __init__(self, fields: Mapping[str, Any], output: OutputTail) -> None:
        self.run_id: int = fields.get("run_id", 0)
        self.attempt: int = fields.get("attempt", 1)
        self.job: str = fields.get("job", "")
        self.lane: str | None = fields.get("lane")
        self.event: dict[str, Any] | None = fields.get("event")
        self.script: str = fields.get("script", "")
        self._output = output

    def log(self, message: str) -> None:
        """Write a line to the run's output tail (shown with the run's result)."""
        self._output.write(f"{message}\n")

    def __repr__(self) -> str:
        return f"<Context run_id={self.run_id} attempt={self.attempt} script={self.script!r}>"


_modules: dict[str, tuple[tuple[int, int], ModuleType]] = {}


def load_script(path: str) -> ModuleType:
    """Import a script by path; re-import only when its file changed."""
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _modules.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    name = "jobmanager_script_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered while it executes so that dataclasses, pickle and friends can find it.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _modules[path] = (stamp, module)
    return module


def _call(module: ModuleType, command: str, ctx: Context) -> object:
    run = getattr(module, "run", None)
    if not callable(run):
        raise TypeError("the script defines no run(command, ctx) function")
    value = run(command, ctx)
    if isinstance(value, Awaitable):
        import asyncio  # only workers that run async scripts pay for asyncio

        async def _wait(awaitable: Any) -> object:
            return await awaitable

        value = asyncio.run(_wait(value))
    return value


def execute(request: Mapping[str, Any], home: str) -> dict[str, Any]:
    """Run one request and describe the outcome as the reply frame's payload."""
    output = OutputTail(int(request.get("tail_bytes", 4096)))
    ctx = Context(request.get("ctx", {}), output)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = output
    try:
        path = str(request["path"])
        if os.path.dirname(path) not in sys.path:
            sys.path.insert(0, os.path.dirname(path))  # scripts may import sibling _helpers
        code, feedback = normalise_result(_call(load_script(path), str(request["command"]), ctx))
    except SystemExit as exc:
        code, feedback = FAILED, f"the script called sys.exit({exc.code!r})"
    except BaseException as exc:
        traceback.print_exc(file=output)
        code, feedback = FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        sys.stdout, sys.stderr = saved
        # A script that changed directory must not change where the next one starts.
        with suppress(OSError):
            os.chdir(home)
    return {"result": code, "feedback": feedback, "output": output.getvalue()}


def main() -> int:
    """Serve requests until the executor closes our stdin."""
    import faulthandler

    faulthandler.enable()  # a crashing extension leaves its traceback in the stderr tail
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull, encoding="utf-8")  # lives as long as the worker
    home = os.getcwd()
    while True:
        request = read_frame(proto_in)
        if request is None:
            return 0
        proto_out.write(encode_frame(execute(request, home)))
        proto_out.flush()


if __name__ == "__main__":
    sys.exit(main())
