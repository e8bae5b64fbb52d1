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
