"""fnmesh python3 runtime.

Started by the node as `/usr/bin/python3 -u shim.py <module.function>` with the function's
folder as cwd and PYTHONPATH holding the generated fnmesh.proto package. Imports the
handler once, then serves invocations one at a time over fd 3: frames of
[u32 little-endian length][FlatBuffers], an Invocation in, a Result out. Exits on EOF.

The handler is called as handle(event, ctx): event is the payload parsed as JSON when it
is valid JSON, else the raw bytes. A bytes or str return value is sent as it is, anything
else as JSON. An exception gives status error with its traceback.
"""
import importlib
import json
import os
import socket
import struct
import sys
import time
import traceback

import flatbuffers
from fnmesh.proto import Invocation as invocation_fb
from fnmesh.proto import Result as result_fb
from fnmesh.proto.Status import Status
from fnmesh.proto.Trigger import Trigger

_TRIGGERS = {v: k for k, v in vars(Trigger).items() if not k.startswith("_")}
_HEADER = struct.Struct("<I")
# vtable slot of Invocation.payload (field 4 of fnmesh.fbs); read as one slice rather
# than byte by byte through the generated accessor.
_PAYLOAD_SLOT = 12


class Context:
    """What a handler knows about its invocation."""

    __slots__ = ("invocation_id", "tenant", "function", "version", "deadline", "attempt",
                 "trigger", "source", "content_type", "trace_id")

    def remaining_ms(self):
        """Milliseconds left before the node stops this invocation."""
        return max(0, (self.deadline - time.time_ns()) // 1_000_000)

    def __repr__(self):
        return (f"Context(invocation_id={self.invocation_id!r}, function={self.function!r}, "
                f"trigger={self.trigger!r}, attempt={self.attempt})")


def _text(b):
    return b.decode("utf-8", "replace") if b else ""


def _payload(inv, buf):
    tab = inv._tab
    o = tab.Offset(_PAYLOAD_SLOT)
    if not o:
        return b""
    start = tab.Vector(o)
    return bytes(buf[start:start + tab.VectorLen(o)])


def _event(payload):
    if not payload:
        return payload
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return payload


def _encode(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):
        return value.encode("utf-8"), "text/plain; charset=utf-8"
    return json.dumps(value, default=str).encode("utf-8"), "application/json"


def _result(inv_id, status, output, error, content_type):
    b = flatbuffers.Builder(len(output) + len(error) + 256)
    id_off = b.CreateString(inv_id)
    out_off = b.CreateByteVector(output)
    err_off = b.CreateString(error) if error else None
    ct_off = b.CreateString(content_type) if content_type else None
    result_fb.ResultStart(b)
    result_fb.ResultAddInvocationId(b, id_off)
    result_fb.ResultAddStatus(b, status)
    result_fb.ResultAddOutput(b, out_off)
    if err_off is not None:
        result_fb.ResultAddError(b, err_off)
    if ct_off is not None:
        result_fb.ResultAddContentType(b, ct_off)
    b.Finish(result_fb.ResultEnd(b))
    return b.Output()


def _send(sock, frame):
    data = memoryview(frame)
    header = _HEADER.pack(len(data))
    sent = sock.sendmsg([header, data])
    if sent < len(header) + len(data):
        rest = (header + bytes(data))[sent:]
        sock.sendall(rest)


def _load(handler):
    module_name, _, function_name = handler.rpartition(".")
    if not module_name:
        raise ImportError(f"handler {handler!r} is not module.function")
    module = importlib.import_module(module_name)
    fn = getattr(module, function_name, None)
    if not callable(fn):
        raise ImportError(f"module {module_name!r} has no function {function_name!r}")
    return fn


def main():
    if len(sys.argv) != 2:
        print("usage: shim.py <module.function>", file=sys.stderr)
        return 2
    handler = sys.argv[1]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        fn = _load(handler)
        init_error = None
    except BaseException:  # the error goes to every invocation, the worker stays
        fn = None
        init_error = f"cannot load handler {handler}:\n{traceback.format_exc()}"
        print(init_error, file=sys.stderr, flush=True)

    timeout_ns = int(os.environ.get("FNMESH_TIMEOUT_S", "3")) * 1_000_000_000
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=3)
    reader = sock.makefile("rb", buffering=1 << 16)
    while True:
        header = reader.read(4)
        if len(header) < 4:
            return 0
        (size,) = _HEADER.unpack(header)
        buf = reader.read(size)
        if len(buf) < size:
            return 0
        started = time.time_ns()
        inv = invocation_fb.Invocation.GetRootAs(buf, 0)
        inv_id = inv.Id() or b""
        if init_error is not None:
            _send(sock, _result(inv_id, Status.error, b"", init_error, ""))
            continue
        ctx = Context()
        ctx.invocation_id = _text(inv_id)
        ctx.tenant = _text(inv.Tenant())
        ctx.function = _text(inv.Function())
        ctx.version = _text(inv.Version())
        ctx.deadline = inv.DeadlineNs() or started + timeout_ns
        ctx.attempt = inv.Attempt()
        ctx.trigger = _TRIGGERS.get(inv.Trigger(), "cli")
        ctx.source = _text(inv.Source())
        ctx.content_type = _text(inv.ContentType())
        ctx.trace_id = _text(inv.TraceId())
        try:
            output, content_type = _encode(fn(_event(_payload(inv, buf)), ctx))
            status, error = Status.ok, ""
        except Exception:
            output, content_type = b"", ""
            status, error = Status.error, traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
        _send(sock, _result(inv_id, status, output, error, content_type))


if __name__ == "__main__":
    sys.exit(main())
