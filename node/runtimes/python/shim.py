"""fnmesh python3 runtime.

Runs in a sandbox forked from the python zygote (zygote.cc calls serve_in_sandbox), or
by hand as `python3 -u shim.py <module.function>` with the function's folder as cwd and
PYTHONPATH holding the generated fnmesh.proto package. Imports the
handler once, then serves invocations one at a time over fd 3: frames of
[u32 little-endian length][FlatBuffers], an Invocation in, a Result out. Exits on EOF.

The handler is called as handle(event, ctx): event is the payload parsed as JSON when it
is valid JSON, else the raw bytes. A bytes or str return value is sent as it is, anything
else as JSON. An exception gives status error with its traceback.
"""
import importlib
import json
import os
import select
import socket
import struct
import sys
import time
import traceback

from fnmesh.proto.Status import Status
from fnmesh.proto.Trigger import Trigger

_TRIGGERS = {v: k for k, v in vars(Trigger).items() if not k.startswith("_")}
_U32 = struct.Struct("<I")
_HEADER = _U32

# The two messages are read and written here directly rather than through the generated
# Python classes, which cost ~100 us per invocation. FlatBuffers never renumbers a field
# (fields are only appended), so these field ids are as stable as the wire format;
# executor_test checks both directions against the C++ side.
# Invocation field ids (fnmesh.fbs).
_INV_ID, _INV_TENANT, _INV_FUNCTION, _INV_VERSION, _INV_PAYLOAD, _INV_CONTENT_TYPE = 0, 1, 2, 3, 4, 5
_INV_TRIGGER, _INV_SOURCE, _INV_DEADLINE, _INV_ATTEMPT, _INV_TRACE_ID = 6, 7, 8, 10, 11
# Result field ids: invocation_id 0, status 1, output 2, error 3, content_type 9.
_RESULT_FIELDS = 10


class _Table:
    """One FlatBuffers table of a received buffer: field id -> value."""

    __slots__ = ("buf", "pos", "slots")

    def __init__(self, buf):
        self.buf = buf
        self.pos = _U32.unpack_from(buf, 0)[0]
        vtable = self.pos - struct.unpack_from("<i", buf, self.pos)[0]
        vt_size = struct.unpack_from("<H", buf, vtable)[0]
        self.slots = struct.unpack_from(f"<{(vt_size - 4) // 2}H", buf, vtable + 4)

    def _field(self, i):
        return self.slots[i] if i < len(self.slots) else 0

    def vector(self, i):
        off = self._field(i)
        if not off:
            return b""
        p = self.pos + off
        p += _U32.unpack_from(self.buf, p)[0]
        n = _U32.unpack_from(self.buf, p)[0]
        return bytes(self.buf[p + 4:p + 4 + n])

    def text(self, i):
        return self.vector(i).decode("utf-8", "replace")

    def scalar(self, i, fmt, default=0):
        off = self._field(i)
        return struct.unpack_from(fmt, self.buf, self.pos + off)[0] if off else default


def _result(inv_id, status, output, error, content_type):
    """A Result buffer: root offset, vtable, table, then the strings and the output."""
    vt_size = 4 + 2 * _RESULT_FIELDS
    table = 4 + vt_size                  # 4-aligned: vt_size is a multiple of 4
    table_size = 24                      # soffset, 4 offsets, the status byte, padding
    slot = [0] * _RESULT_FIELDS
    slot[1] = 20
    inline = bytearray()
    tail = bytearray()
    data = table + table_size
    for field, at, value, is_text in ((0, 4, inv_id, True), (2, 8, output, False),
                                      (3, 12, error.encode("utf-8", "replace") if error else None, True),
                                      (9, 16, content_type.encode() if content_type else None, True)):
        if value is None:
            inline += _U32.pack(0)
            continue
        slot[field] = at
        inline += _U32.pack(data + len(tail) - (table + at))
        tail += _U32.pack(len(value))
        tail += value
        end = 1 if is_text else 0        # strings end in NUL
        tail += bytes(end + (-(len(value) + end)) % 4)
    out = bytearray(_U32.pack(table))
    out += struct.pack(f"<HH{_RESULT_FIELDS}H", vt_size, table_size, *slot)
    out += struct.pack("<i", table - 4)  # from the table back to its vtable at 4
    out += inline
    out += bytes((status, 0, 0, 0))
    out += tail
    return out


class Context:
    """What a handler knows about its invocation; fields are read from it when asked."""

    __slots__ = ("_inv", "_started", "_timeout_ns", "invocation_id")

    def __init__(self, inv, invocation_id, started, timeout_ns):
        self._inv = inv
        self._started = started
        self._timeout_ns = timeout_ns
        self.invocation_id = invocation_id

    tenant = property(lambda self: self._inv.text(_INV_TENANT))
    function = property(lambda self: self._inv.text(_INV_FUNCTION))
    version = property(lambda self: self._inv.text(_INV_VERSION))
    source = property(lambda self: self._inv.text(_INV_SOURCE))
    content_type = property(lambda self: self._inv.text(_INV_CONTENT_TYPE))
    trace_id = property(lambda self: self._inv.text(_INV_TRACE_ID))
    attempt = property(lambda self: self._inv.scalar(_INV_ATTEMPT, "<I"))
    trigger = property(lambda self: _TRIGGERS.get(self._inv.scalar(_INV_TRIGGER, "<B"), "cli"))

    @property
    def deadline(self):
        """Unix ns by which the node stops this invocation."""
        return self._inv.scalar(_INV_DEADLINE, "<q") or self._started + self._timeout_ns

    def remaining_ms(self):
        """Milliseconds left before the node stops this invocation."""
        return max(0, (self.deadline - time.time_ns()) // 1_000_000)

    def __repr__(self):
        return (f"Context(invocation_id={self.invocation_id!r}, function={self.function!r}, "
                f"trigger={self.trigger!r}, attempt={self.attempt})")


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


def _send(sock, frame):
    data = memoryview(frame)
    header = _HEADER.pack(len(data))
    sent = sock.sendmsg([header, data])
    if sent < len(header) + len(data):
        rest = (header + bytes(data))[sent:]
        sock.sendall(rest)


def _frames(sock, poller):
    """The frames the node sends, one at a time; ends on EOF. One recv reads a whole
    frame as the node writes it."""
    pending = bytearray()
    chunk = bytearray(64 * 1024)
    while True:
        while len(pending) >= 4:
            end = 4 + _HEADER.unpack_from(pending, 0)[0]
            if len(pending) < end:
                break
            frame = bytes(pending[4:end])
            del pending[:end]
            yield frame
        poller.poll()
        n = sock.recv_into(chunk)
        if not n:
            return
        pending += memoryview(chunk)[:n]


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
    return serve(sys.argv[1])


def serve_in_sandbox(handler, env):
    """Entry of a sandbox forked from the zygote (zygote.cc): cwd is /var/task already."""
    os.environ.clear()
    os.environ.update(kv.split("=", 1) for kv in env if "=" in kv)
    return serve(handler)


def serve(handler):
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
    # Sleep in poll() rather than in recv(): a reader blocked in recv() on a unix socket is
    # also woken each time the node drains the reply it sent, a wasted wake-up.
    poller = select.poll()
    poller.register(3, select.POLLIN)
    for buf in _frames(sock, poller):
        inv = _Table(buf)
        inv_id = inv.vector(_INV_ID)
        if init_error is not None:
            _send(sock, _result(inv_id, Status.error, b"", init_error, ""))
            continue
        ctx = Context(inv, inv_id.decode("utf-8", "replace"), time.time_ns(), timeout_ns)
        try:
            output, content_type = _encode(fn(_event(inv.vector(_INV_PAYLOAD)), ctx))
            status, error = Status.ok, ""
        except Exception:
            output, content_type = b"", ""
            status, error = Status.error, traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
        _send(sock, _result(inv_id, status, output, error, content_type))
    return 0


if __name__ == "__main__":
    sys.exit(main())
