'use strict';
// fnmesh nodejs runtime.
//
// Started by the node as `node shim.js <file.export>` with the function's folder as cwd.
// Loads the handler once, then serves invocations one at a time over fd 3: frames of
// [u32 little-endian length][FlatBuffers], an Invocation in, a Result out. Exits 0 when
// the node closes fd 3, 1 on a malformed frame (with the reason on stderr).
//
// The handler is called as handle(event, ctx) and may be async: event is the payload
// parsed as JSON when it is valid JSON, else the raw bytes (a Buffer). A Buffer or string
// return value is sent as it is, anything else as JSON. A throw gives status error with
// its stack. The same rules as the python3 runtime (node/runtimes/python/shim.py).
//
// console.log and friends write to the stdout/stderr pipes, which Node writes
// synchronously on Linux: every line reaches the node as it is logged.
const net = require('net');
const path = require('path');

// The largest frame the node sends (proto::max_message_bytes).
const MAX_FRAME = 8 << 20;

// Field ids (fnmesh.fbs). FlatBuffers never renumbers a field, so these are as stable as
// the wire format; nodejs_runtime_test checks both directions against the C++ side.
const INV = {
  id: 0, tenant: 1, function: 2, version: 3, payload: 4, content_type: 5,
  trigger: 6, source: 7, deadline_ns: 8, attempt: 10, trace_id: 11,
};
const TRIGGERS = ['cli', 'http', 'cron', 'event', 'file', 'function'];
const STATUS_OK = 0;
const STATUS_ERROR = 1;

const EMPTY = Buffer.alloc(0);

class MalformedFrame extends Error {}

function check(ok, what) {
  if (!ok) throw new MalformedFrame(what);
}

// The root table of a received FlatBuffers buffer. Every read is bounds-checked: an
// offset that leaves the buffer throws MalformedFrame.
class Table {
  constructor(buf) {
    check(buf.length >= 8, 'buffer shorter than a root offset and a table');
    this.buf = buf;
    this.pos = buf.readUInt32LE(0);
    check(this.pos % 4 === 0 && this.pos + 4 <= buf.length, 'root table outside the buffer');
    const vtable = this.pos - buf.readInt32LE(this.pos);
    check(vtable >= 0 && vtable % 2 === 0 && vtable + 4 <= buf.length, 'vtable outside the buffer');
    this.vtable = vtable;
    this.vtableSize = buf.readUInt16LE(vtable);
    this.tableSize = buf.readUInt16LE(vtable + 2);
    check(this.vtableSize >= 4 && this.vtableSize % 2 === 0 && vtable + this.vtableSize <= buf.length,
      'vtable size');
    check(this.tableSize >= 4 && this.pos + this.tableSize <= buf.length, 'table size');
  }

  // Where field `id` of `width` bytes starts in the buffer, 0 when absent.
  field(id, width) {
    const at = 4 + 2 * id;
    if (at >= this.vtableSize) return 0;
    const off = this.buf.readUInt16LE(this.vtable + at);
    if (off === 0) return 0;
    check(off >= 4 && off + width <= this.tableSize, `field ${id} outside its table`);
    return this.pos + off;
  }

  // Where the bytes of a [ubyte] vector or string field start and end; null when absent.
  span(id) {
    const at = this.field(id, 4);
    if (at === 0) return null;
    const start = at + this.buf.readUInt32LE(at);
    check(start % 4 === 0 && start + 4 <= this.buf.length, `field ${id}: vector outside the buffer`);
    const length = this.buf.readUInt32LE(start);
    check(length <= this.buf.length - start - 4, `field ${id}: vector longer than the buffer`);
    return [start + 4, start + 4 + length];
  }

  // A view into the received buffer.
  bytes(id) {
    const s = this.span(id);
    return s ? this.buf.subarray(s[0], s[1]) : EMPTY;
  }

  text(id) {
    const s = this.span(id);
    return s ? this.buf.toString('utf8', s[0], s[1]) : '';
  }

  u8(id) {
    const at = this.field(id, 1);
    return at ? this.buf.readUInt8(at) : 0;
  }

  u32(id) {
    const at = this.field(id, 4);
    return at ? this.buf.readUInt32LE(at) : 0;
  }

  i64(id) {
    const at = this.field(id, 8);
    return at ? this.buf.readBigInt64LE(at) : 0n;
  }
}

// A whole frame holding one Result: the length, the root offset, a vtable for fields
// 0..9 at 4, the table (soffset; invocation_id 0, output 2, error 3 and content_type 9 as
// offsets to their vectors; the status byte 1), then the vectors. Strings end in NUL;
// every vector starts 4-aligned. The same layout as the python3 runtime's.
function resultFrame(invocationId, status, output, error, contentType) {
  const VTABLE = 4;
  const FIELDS = 10;
  const TABLE = VTABLE + 4 + 2 * FIELDS;                // 28, 4-aligned
  const TABLE_SIZE = 24;
  const STATUS_AT = 20;
  const vectors = [                                     // [field id, at in the table, bytes, NUL?]
    [0, 4, invocationId, true],
    [2, 8, output, false],
    [3, 12, error ? Buffer.from(error, 'utf8') : null, true],
    [9, 16, contentType ? Buffer.from(contentType, 'utf8') : null, true],
  ];
  const padded = (n) => (n + 3) & ~3;
  let size = TABLE + TABLE_SIZE;
  for (const [, , value, nul] of vectors) if (value) size += 4 + padded(value.length + (nul ? 1 : 0));

  const frame = Buffer.allocUnsafe(4 + size).fill(0);
  frame.writeUInt32LE(size, 0);
  const buf = frame.subarray(4);
  const setSlot = (id, at) => buf.writeUInt16LE(at, VTABLE + 4 + 2 * id);
  buf.writeUInt32LE(TABLE, 0);
  buf.writeUInt16LE(4 + 2 * FIELDS, VTABLE);
  buf.writeUInt16LE(TABLE_SIZE, VTABLE + 2);
  buf.writeInt32LE(TABLE - VTABLE, TABLE);
  setSlot(1, STATUS_AT);
  buf.writeUInt8(status, TABLE + STATUS_AT);
  let next = TABLE + TABLE_SIZE;
  for (const [id, at, value, nul] of vectors) {
    if (!value) continue;
    setSlot(id, at);
    buf.writeUInt32LE(next - (TABLE + at), TABLE + at);
    buf.writeUInt32LE(value.length, next);
    value.copy(buf, next + 4);
    next += 4 + padded(value.length + (nul ? 1 : 0));
  }
  return frame;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const WHITE_SPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);
const JSON_START = new Set(Buffer.from('{["-0123456789tfn'));

// Parsed as JSON when it is valid JSON, else the bytes as they came. Bytes that cannot
// start a JSON text skip the parse: a thrown SyntaxError costs ~15 us.
function eventOf(payload) {
  const first = payload.findIndex((b) => !WHITE_SPACE.has(b));
  if (first < 0 || !JSON_START.has(payload[first])) return payload;
  try {
    return JSON.parse(utf8.decode(payload));
  } catch {
    return payload;
  }
}

function encode(value) {
  if (ArrayBuffer.isView(value))
    return [Buffer.from(value.buffer, value.byteOffset, value.byteLength), 'application/octet-stream'];
  if (value instanceof ArrayBuffer) return [Buffer.from(value), 'application/octet-stream'];
  if (typeof value === 'string') return [Buffer.from(value, 'utf8'), 'text/plain; charset=utf-8'];
  const json = JSON.stringify(value, (key, v) => (typeof v === 'bigint' ? v.toString() : v));
  return [Buffer.from(json === undefined ? 'null' : json, 'utf8'), 'application/json'];
}

function errorText(e) {
  return e instanceof Error && e.stack ? e.stack : String(e);
}

// "handler.handle" -> export handle of ./handler.js; "lib.orders.handle" -> ./lib/orders.js.
function load(handler) {
  const dot = handler.lastIndexOf('.');
  if (dot <= 0) throw new Error(`handler ${JSON.stringify(handler)} is not file.export`);
  const file = handler.slice(0, dot).replaceAll('.', '/');
  const name = handler.slice(dot + 1);
  const mod = require(path.resolve(process.cwd(), file));
  if (typeof mod[name] !== 'function') throw new Error(`module ${file} has no function ${name}`);
  return mod[name];
}

// Everything a handler knows about its invocation; `deadline` is unix ms.
class Context {
  constructor(inv, fallbackDeadline) {
    this.invocation_id = inv.text(INV.id);
    this.tenant = inv.text(INV.tenant);
    this.function = inv.text(INV.function);
    this.version = inv.text(INV.version);
    const deadlineNs = inv.i64(INV.deadline_ns);
    this.deadline = deadlineNs ? Number(deadlineNs / 1000000n) : fallbackDeadline;
    this.attempt = inv.u32(INV.attempt);
    this.trigger = TRIGGERS[inv.u8(INV.trigger)] ?? 'cli';
    this.source = inv.text(INV.source);
    this.content_type = inv.text(INV.content_type);
    this.trace_id = inv.text(INV.trace_id);
  }

  // Milliseconds left before the node stops this invocation.
  remaining_ms() {
    return Math.max(0, this.deadline - Date.now());
  }
}

// The frames arriving on a stream, one at a time: the next is read only once the
// consumer asks for it, so a slow handler leaves what follows in the socket.
async function* frames(stream) {
  let chunks = [];
  let size = 0;
  for await (const chunk of stream) {
    chunks.push(chunk);
    size += chunk.length;
    while (size >= 4) {
      if (chunks[0].length < 4) chunks = [Buffer.concat(chunks, size)];
      const length = chunks[0].readUInt32LE(0);
      check(length <= MAX_FRAME, `frame of ${length} bytes`);
      if (size < 4 + length) break;
      const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
      const rest = all.subarray(4 + length);
      chunks = rest.length ? [rest] : [];
      size = rest.length;
      yield all.subarray(4, 4 + length);
    }
  }
}

async function serve(handler) {
  let fn = null;
  let initError = null;
  try {
    fn = load(handler);
  } catch (e) { // the error goes to every invocation, the worker stays
    initError = `cannot load handler ${handler}:\n${errorText(e)}`;
    console.error(initError);
  }
  const timeoutMs = (Number(process.env.FNMESH_TIMEOUT_S) || 3) * 1000;
  const sock = new net.Socket({ fd: 3, readable: true, writable: true });
  for await (const frame of frames(sock)) {
    const started = Date.now();
    const inv = new Table(frame);
    const id = inv.bytes(INV.id);
    if (initError !== null) {
      sock.write(resultFrame(id, STATUS_ERROR, null, initError, ''));
      continue;
    }
    const ctx = new Context(inv, started + timeoutMs);
    const event = eventOf(inv.bytes(INV.payload));
    let reply;
    try {
      const [output, contentType] = encode(await fn(event, ctx));
      reply = resultFrame(id, STATUS_OK, output, '', contentType);
    } catch (e) {
      const error = errorText(e);
      console.error(error);
      reply = resultFrame(id, STATUS_ERROR, null, error, '');
    }
    sock.write(reply);
  }
}

if (process.argv.length !== 3) {
  console.error('usage: node shim.js <file.export>');
  process.exit(2);
}
serve(process.argv[2]).then(
  () => process.exit(0),
  (e) => {
    console.error(`fnmesh nodejs runtime: ${e instanceof MalformedFrame ? 'malformed frame: ' + e.message : errorText(e)}`);
    process.exit(1);
  });
