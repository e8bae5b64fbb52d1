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
