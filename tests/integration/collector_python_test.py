#!/usr/bin/python3
"""An outside client of a running fnmesh-collector, written from its documentation only.

ZeroMQ (Debian's python3-zmq): a DEALER sends one frame per message holding one
CollectorRequest FlatBuffer (flatbuffers/fnmesh.fbs, Python code from `flatc --python`)
and gets one CollectorReply frame back with the same request_id (broker/collector/README.md).
HTTP (the curl binary): /v1/usage, /v1/activations and /v1/activations/<id> with a Bearer
token, and /metrics without one (the collector README's "HTTP API").

The collector must be fresh (nothing stored, nothing malformed yet) and the token must be
tenant `acme`'s. Run by collector_api_test (python_zmq_and_curl_speak_the_documented_protocols):

  collector_python_test.py --zmq tcp://127.0.0.1:PORT --http http://127.0.0.1:PORT \
      --token TOKEN --generated BUILD/python

Prints what it checks; exits 1 at the first check that fails.
"""
import argparse
import base64
import importlib
import json
import random
import subprocess
import sys
import time
import types

import flatbuffers
import zmq

TENANT = "acme"
NODE = "py-node"
MIB = 1 << 20
MAX_MESSAGE_BYTES = 8 << 20  # flatbuffers/proto.h: larger messages are dropped
proto = None  # the generated modules, by name (load_proto)


def load_proto(generated):
    sys.path.insert(0, generated)
    names = ("AccountingSource", "BatchAck", "CollectorReply", "CollectorRequest", "Completion",
             "CompletionBatch", "ReplyBody", "RequestBody", "Result", "SpooledCompletion",
             "Status", "Timings", "Trigger", "Usage")
    return types.SimpleNamespace(
        **{n: importlib.import_module("fnmesh.proto." + n) for n in names})


def fail(what):
    print("FAILED: " + what, flush=True)
    sys.exit(1)


def check_equal(got, want, what):
    if got == want:
        return
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        i = next(i for i in range(len(got)) if got[i] != want[i])
        fail("%s [%d]: got %r, want %r" % (what, i, got[i], want[i]))
    fail("%s: got %r, want %r" % (what, got, want))


# ---- the prices (the collector README's "Money"): integer pico-USD, halves rounded up ----

def rounded(num, den):
    return (num + den // 2) // den


def memory_mb(r):
    return -(-r["memory_limit_bytes"] // MIB)  # whole MB, rounded up


def lambda_pusd(r):
    # billed ms x configured GB x $0.0000166667 per GB-s, + $0.20 per million requests
    return rounded(r["billed_ms"] * memory_mb(r) * 16_666_700, 1000 * 1024) + 200_000


def usage_pusd(r):
    # CPU s x $0.000011244444 + peak GB x wall s x $0.000001234722 + net GB x $0.09, each
    # part rounded, + the request fee
    gib, giga = 1 << 30, 10**9
    return (rounded((r["cpu_user_ns"] + r["cpu_system_ns"]) * 11_244_444, giga)
            + rounded(r["peak_memory_bytes"] * r["wall_ns"] * 1_234_722, gib * giga)
            + rounded((r["net_rx_bytes"] + r["net_tx_bytes"]) * 90_000_000_000, gib)
            + 200_000)


def usd(pusd):
    return "%d.%012d" % divmod(pusd, 10**12)


# ---- the ZeroMQ protocol ----

def completion_bytes(r):
    Completion, Result, Usage, Timings = (proto.Completion, proto.Result, proto.Usage,
                                          proto.Timings)
    b = flatbuffers.Builder(512)
    strings = {k: b.CreateString(r[k]) for k in ("id", "tenant", "function", "error",
                                                  "content_type")}
    node = b.CreateString(NODE)
    output = b.CreateByteVector(r["output"])
    Result.Start(b)
    Result.AddInvocationId(b, strings["id"])
    Result.AddStatus(b, r["status"])
    Result.AddOutput(b, output)
    Result.AddError(b, strings["error"])
    Result.AddNodeId(b, node)
    Result.AddColdStart(b, r["cold_start"])
    Result.AddTimings(b, Timings.CreateTimings(b, r["queued_ns"], r["started_ns"],
                                               r["finished_ns"]))
    Result.AddAttempt(b, r["attempt"])
    Result.AddContentType(b, strings["content_type"])
    result = Result.End(b)
    Usage.Start(b)
    Usage.AddInvocationId(b, strings["id"])
    Usage.AddAttempt(b, r["attempt"])
    Usage.AddTenant(b, strings["tenant"])
    Usage.AddFunction(b, strings["function"])
    Usage.AddNodeId(b, node)
    Usage.AddNodeSeq(b, r["seq"])
    Usage.AddWallNs(b, r["wall_ns"])
    Usage.AddCpuUserNs(b, r["cpu_user_ns"])
    Usage.AddCpuSystemNs(b, r["cpu_system_ns"])
    Usage.AddPeakMemoryBytes(b, r["peak_memory_bytes"])
    Usage.AddMemoryLimitBytes(b, r["memory_limit_bytes"])
    Usage.AddNetRxBytes(b, r["net_rx_bytes"])
    Usage.AddNetTxBytes(b, r["net_tx_bytes"])
    Usage.AddColdStart(b, r["cold_start"])
    Usage.AddBilledDurationMs(b, r["billed_ms"])
    Usage.AddSource(b, proto.AccountingSource.AccountingSource.bpf)
    Usage.AddTrigger(b, proto.Trigger.Trigger.cron)
    usage = Usage.End(b)
    Completion.Start(b)
    Completion.AddResult(b, result)
    Completion.AddUsage(b, usage)
    b.Finish(Completion.End(b))
    return bytes(b.Output())


def batch_request(request_id, records):
    """A CollectorRequest carrying a CompletionBatch: each completion a nested buffer."""
    b = flatbuffers.Builder(4096)
    items = []
    for r in records:
        nested = b.CreateByteVector(completion_bytes(r))
        proto.SpooledCompletion.Start(b)
        proto.SpooledCompletion.AddSeq(b, r["seq"])
        proto.SpooledCompletion.AddCompletion(b, nested)
        items.append(proto.SpooledCompletion.End(b))
    proto.CompletionBatch.StartCompletionsVector(b, len(items))
    for item in reversed(items):
        b.PrependUOffsetTRelative(item)
    completions = b.EndVector()
    node = b.CreateString(NODE)
    proto.CompletionBatch.Start(b)
    proto.CompletionBatch.AddNodeId(b, node)
    proto.CompletionBatch.AddCompletions(b, completions)
    body = proto.CompletionBatch.End(b)
    proto.CollectorRequest.Start(b)
    proto.CollectorRequest.AddRequestId(b, request_id)
    proto.CollectorRequest.AddBodyType(b, proto.RequestBody.RequestBody.CompletionBatch)
    proto.CollectorRequest.AddBody(b, body)
    b.Finish(proto.CollectorRequest.End(b))
    return bytes(b.Output())


def batch_ack(sock, request_id):
    """Waits for the reply to `request_id`: (last_seq, stored, duplicates)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not sock.poll(int((deadline - time.monotonic()) * 1000) + 1):
            break
        frames = sock.recv_multipart()
        check_equal(len(frames), 1, "frames in a reply")
        reply = proto.CollectorReply.CollectorReply.GetRootAs(frames[0], 0)
        if reply.RequestId() != request_id:
            continue
        check_equal(reply.BodyType(), proto.ReplyBody.ReplyBody.BatchAck, "reply body type")
        ack = proto.BatchAck.BatchAck()
        ack.Init(reply.Body().Bytes, reply.Body().Pos)
        check_equal(ack.NodeId().decode(), NODE, "BatchAck.node_id")
        return ack.LastSeq(), ack.Stored(), ack.Duplicates()
    fail("no reply to request %d" % request_id)


# ---- HTTP through curl ----

def curl(url, token=None):
    """(status, headers with lower-case names, body) of a GET through the curl binary."""
    args = ["curl", "--silent", "--show-error", "--include", "--max-time", "30", url]
    if token:
        args[1:1] = ["--header", "Authorization: Bearer " + token]
    out = subprocess.run(args, capture_output=True, check=True).stdout.decode()
    head, _, body = out.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def curl_json(url, token, what):
    status, _, body = curl(url, token)
    check_equal(status, 200, what + " status (" + body + ")")
    return json.loads(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zmq", required=True, help="the collector's ROUTER endpoint")
    parser.add_argument("--http", required=True, help="http://HOST:PORT of its HTTP API")
    parser.add_argument("--token", required=True, help="a query token of tenant acme")
    parser.add_argument("--generated", required=True, help="where flatc --python wrote fnmesh/")
    args = parser.parse_args()
    global proto
    proto = load_proto(args.generated)
    Status = proto.Status.Status

    rng = random.Random(61)
    now = time.time_ns()
    records = []
    for i in range(40):
        wall = rng.randrange(1, 3000) * 1_000_000 - rng.randrange(0, 1_000_000)
        finished = now - 3_600_000_000_000 + i * 1_000_000_000
        records.append({
            "id": "py-%02d" % i, "attempt": 1, "tenant": TENANT,
            "function": "py-resize" if i % 3 else "py-thumb",
            "status": Status.ok if i % 5 else Status.error,
            "output": ("résultat %d" % i).encode(), "error": "" if i % 5 else "boom",
            "content_type": "text/plain; charset=utf-8", "cold_start": i % 7 == 0,
            "finished_ns": finished, "started_ns": finished - wall,
            "queued_ns": finished - wall - 1_000_000, "wall_ns": wall,
            "billed_ms": -(-wall // 1_000_000),
            "memory_limit_bytes": rng.choice([128, 256, 1769, 10240]) * MIB - rng.choice([0, 1]),
            "cpu_user_ns": rng.randrange(0, 2 * 10**9), "cpu_system_ns": rng.randrange(0, 10**8),
            "peak_memory_bytes": rng.randrange(1, 128 * MIB),
            "net_rx_bytes": rng.randrange(0, 5 * MIB), "net_tx_bytes": rng.randrange(0, 5 * MIB),
        })
    # py-retry: tried three times; the first two ran out of memory, the last returned bytes.
    for attempt in (1, 2, 3):
        r = dict(records[attempt], id="py-retry", attempt=attempt, function="py-retry",
                 finished_ns=now - 60_000_000_000 + attempt * 1_000_000_000)
        r["started_ns"] = r["finished_ns"] - r["wall_ns"]
        r["queued_ns"] = r["started_ns"] - 1_000_000
        r["status"] = Status.ok if attempt == 3 else Status.out_of_memory
        r["error"] = "" if attempt == 3 else "out of memory"
        r["output"] = b"\x00\xffbinary" if attempt == 3 else b""
        r["content_type"] = "application/octet-stream"
        records.append(r)
    for seq, r in enumerate(records, start=1):
        r["seq"] = seq
    first, second = records[:25], records[25:]

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(args.zmq)

    print("zmq: two CompletionBatches, then the first one again", flush=True)
    sock.send(batch_request(1, first)) 
    check_equal(batch_ack(sock, 1), (25, 25, 0), "first batch (last_seq, stored, dups)")
    sock.send(batch_request(2, second)) 
    check_equal(batch_ack(sock, 2), (len(records), len(second), 0), "second batch")
    sock.send(batch_request(3, first)) 
    check_equal(batch_ack(sock, 3), (25, 0, 25), "replayed first batch")

    print("zmq: garbage, two frames, a torn request, an oversized one, an empty one", flush=True)
    sock.send(rng.randbytes(512))
    sock.send_multipart([b"two", batch_request(4, first[:1])])
    torn = batch_request(5, second)
    sock.send(torn[: len(torn) // 2])
    sock.send(bytes(MAX_MESSAGE_BYTES + 1024))
    sock.send(b"")
    malformed = 5
    extra = dict(records[0], id="py-after-garbage", seq=len(records) + 1,
                 finished_ns=now - 30_000_000_000)
    extra["started_ns"] = extra["finished_ns"] - extra["wall_ns"]
    extra["queued_ns"] = extra["started_ns"]
    sock.send(batch_request(6, [extra])) 
    check_equal(batch_ack(sock, 6), (len(records) + 1, 1, 0),
                "a batch after the garbage (the collector still serves)")
    records.append(extra)

    base = args.http
    print("curl: /metrics without a token counts the malformed messages", flush=True)
    status, _, metrics = curl(base + "/metrics")
    check_equal(status, 200, "/metrics status")
    samples = [line.split() for line in metrics.splitlines()
               if line.startswith("fnmesh_collector_malformed_total ")]
    check_equal(len(samples), 1, "fnmesh_collector_malformed_total in /metrics:\n" + metrics)
    check_equal(float(samples[0][1]), malformed, "fnmesh_collector_malformed_total")

    print("curl: /v1/usage by function, both models, against our own sums", flush=True)
    for model, cost_of in (("lambda", lambda_pusd), ("usage", usage_pusd)):
        got = curl_json(base + "/v1/usage?by=function&model=" + model, args.token, "/v1/usage")
        want = {}
        for r in records:
            row = want.setdefault(r["function"], {
                "key": r["function"], "invocations": 0, "errors": 0, "cold_starts": 0,
                "billed_ms": 0, "memory_mb_ms": 0, "cpu_ns": 0, "network_bytes": 0,
                "peak_memory_bytes": 0, "cost_pusd": 0})
            row["invocations"] += 1
            row["errors"] += r["status"] != Status.ok
            row["cold_starts"] += r["cold_start"]
            row["billed_ms"] += r["billed_ms"]
            row["memory_mb_ms"] += r["billed_ms"] * memory_mb(r)
            row["cpu_ns"] += r["cpu_user_ns"] + r["cpu_system_ns"]
            row["network_bytes"] += r["net_rx_bytes"] + r["net_tx_bytes"]
            row["peak_memory_bytes"] = max(row["peak_memory_bytes"], r["peak_memory_bytes"])
            row["cost_pusd"] += cost_of(r)
        want_rows = [want[k] for k in sorted(want)]
        total = {k: sum(w[k] for w in want_rows) for k in want_rows[0] if k != "key"}
        total["peak_memory_bytes"] = max(w["peak_memory_bytes"] for w in want_rows)
        for row in want_rows + [total]:
            row["cost_usd"] = usd(row["cost_pusd"])
        got_rows = [{k: g.get(k) for k in w} for g, w in zip(got["rows"], want_rows)]
        check_equal(len(got["rows"]), len(want_rows), model + " rows")
        check_equal(got_rows, want_rows, model + " rows")
        check_equal({k: got["total"].get(k) for k in total}, total, model + " total")

    print("curl: /v1/activations, newest first, and the retried invocation", flush=True)
    got = curl_json(base + "/v1/activations?limit=1000", args.token, "/v1/activations")
    newest_first = sorted(records, key=lambda r: r["finished_ns"], reverse=True)
    check_equal([(a["invocation_id"], a["attempt"]) for a in got["activations"]],
                [(r["id"], r["attempt"]) for r in newest_first], "activations")
    got = curl_json(base + "/v1/activations?status=out_of_memory", args.token, "status filter")
    check_equal([(a["invocation_id"], a["attempt"]) for a in got["activations"]],
                [("py-retry", 2), ("py-retry", 1)], "out_of_memory activations")

    got = curl_json(base + "/v1/activations/py-retry", args.token, "/v1/activations/py-retry")
    check_equal((got["invocation_id"], got["tenant"], got["function"]),
                ("py-retry", TENANT, "py-retry"), "activation")
    check_equal([(a["attempt"], a["status"], a["error"]) for a in got["attempts"]],
                [(1, "out_of_memory", "out of memory"), (2, "out_of_memory", "out of memory"),
                 (3, "ok", "")], "attempts")
    last = got["attempts"][2]
    sent = next(r for r in records if r["id"] == "py-retry" and r["attempt"] == 3)
    check_equal(base64.b64decode(last.get("output_base64", "")), sent["output"], "output bytes")
    check_equal((last["usage"]["billed_ms"], last["usage"]["source"], last["usage"]["trigger"],
                 last["cost_lambda_pusd"], last["cost_usage_pusd"]),
                (sent["billed_ms"], "bpf", "cron", lambda_pusd(sent), usage_pusd(sent)),
                "last attempt's usage and costs")
    got = curl_json(base + "/v1/activations/py-07", args.token, "/v1/activations/py-07")
    check_equal(got["attempts"][0].get("output"), "résultat 7", "text output")

    print("curl: no token, or a wrong one, is 401 with a Bearer challenge", flush=True)
    for token in (None, "wrong-token-0123456789abcdef"):
        status, headers, body = curl(base + "/v1/usage", token)
        check_equal(status, 401, "status without a valid token")
        check_equal(headers.get("www-authenticate"), 'Bearer realm="fnmesh"', "challenge")
        if "error" not in json.loads(body):
            fail("401 body without an error: " + body)
    print("ok", flush=True)


if __name__ == "__main__":
    main()
