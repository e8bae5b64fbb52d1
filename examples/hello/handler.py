"""hello: greets whoever the event names."""


def handle(event, ctx):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"greeting": f"Hello, {name}!", "invocation": ctx.invocation_id}
