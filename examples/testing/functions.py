"""Functions that misbehave on purpose, for the tests."""
import os
import sys
import time


def sleepy(event, ctx):
    ms = event.get("ms", 100) if isinstance(event, dict) else 100
    time.sleep(ms / 1000)
    return {"slept_ms": ms, "pid": os.getpid()}


def crashy(event, ctx):
    print("crashy: about to die", file=sys.stderr, flush=True)
    how = event.get("how", "kill") if isinstance(event, dict) else "kill"
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), 9)


def failing(event, ctx):
    raise RuntimeError("failing: this handler always raises")


def inspect(event, ctx):
    """Echoes what the runtime handed over: the event, the context and the environment."""
    return {
        "event": event if not isinstance(event, bytes) else {"bytes": len(event)},
        "invocation_id": ctx.invocation_id,
        "tenant": ctx.tenant,
        "function": ctx.function,
        "version": ctx.version,
        "trigger": ctx.trigger,
        "source": ctx.source,
        "attempt": ctx.attempt,
        "content_type": ctx.content_type,
        "remaining_ms": ctx.remaining_ms(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("FNMESH_", "GREETING"))},
        "cwd": os.getcwd(),
    }


def hog(event, ctx):
    """Touches event["mb"] MiB of memory, then frees it."""
    mb = event.get("mb", 1) if isinstance(event, dict) else 1
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return {"mb": mb}


def burn(event, ctx):
    """Spins until it used event["ms"] of CPU time; returns the CPU time it measured."""
    ms = event.get("ms", 100) if isinstance(event, dict) else 100
    start = time.process_time_ns()
    while time.process_time_ns() - start < ms * 1_000_000:
        pass
    return {"cpu_ns": time.process_time_ns() - start}


def net_send(event, ctx):
    """Sends event["bytes"] bytes over TCP to event["host"]:event["port"], or with no port to
    a listener of its own on event["host"], which receives them too."""
    import socket
    import threading
    n = event.get("bytes", 1 << 20)
    host = event.get("host", "127.0.0.1")
    data = b"x" * n
    if "port" in event:
        with socket.create_connection((host, event["port"]), timeout=5) as c:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            c.recv(1)  # the peer's close: everything was delivered within this invocation
        return {"sent": n, "received": 0}
    with socket.socket() as server:
        server.bind((host, 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname(), timeout=5)
        peer, _ = server.accept()
        sender = threading.Thread(target=lambda: (client.sendall(data), client.close()))
        sender.start()
        received = 0
        while chunk := peer.recv(1 << 16):
            received += len(chunk)
        sender.join()
        peer.close()
    return {"sent": n, "received": received}


def net_bind(event, ctx):
    """Binds a TCP socket to event["host"]:event["port"] and listens; returns "ok" or the
    errno's name."""
    import errno
    import socket
    host = event.get("host", "127.0.0.1")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, event["port"]))
            s.listen(1)
        return {"result": "ok"}
    except OSError as e:
        return {"result": errno.errorcode.get(e.errno, str(e))}


def net_connect(event, ctx):
    """Connects over TCP to event["host"]:event["port"] (or, with "udp", sends it one
    datagram); returns "ok" or the errno's name."""
    import errno
    import socket
    host, port = event.get("host", "127.0.0.1"), event["port"]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if event.get("udp") else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as s:
            if event.get("udp"):
                s.sendto(b"x", (host, port))
            else:
                s.settimeout(2)
                s.connect((host, port))
        return {"result": "ok"}
    except OSError as e:
        return {"result": errno.errorcode.get(e.errno, str(e))}
