"""on-order: summarises an order event published on fnmesh.events.orders.*"""


def handle(event, ctx):
    if not isinstance(event, dict):
        raise ValueError("an order event is a JSON object")
    items = event.get("items", [])
    total = sum(float(i.get("price", 0)) * int(i.get("qty", 1)) for i in items)
    return {
        "order": event.get("id"),
        "subject": ctx.source,
        "items": len(items),
        "total": round(total, 2),
    }
