"""A customer-support domain: classify a ticket, look up an order, refund it (with progress steps).

The "database" is a small in-memory table, so the demo needs nothing else. Refunds use the workflow's
idempotency key, as a real payment API call would, so a redelivered command never refunds twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mcp_gateway_worker import ToolContext, ToolFailure, Worker

__all__ = ["ORDERS", "worker"]

worker = Worker("support")

ORDERS: dict[str, dict[str, Any]] = {
    "ORD-1001": {
        "status": "delivered",
        "customer": "ada@example.com",
        "total_cents": 4999,
        "currency": "EUR",
        "items": [{"sku": "KB-01", "name": "Mechanical keyboard", "quantity": 1, "price_cents": 4999}],
    },
    "ORD-1002": {
        "status": "shipped",
        "customer": "alan@example.com",
        "total_cents": 2598,
        "currency": "EUR",
        "items": [{"sku": "MS-02", "name": "Mouse", "quantity": 2, "price_cents": 1299}],
    },
    "ORD-1003": {
        "status": "processing",
        "customer": "grace@example.com",
        "total_cents": 12900,
        "currency": "USD",
        "items": [{"sku": "MN-27", "name": "27-inch monitor", "quantity": 1, "price_cents": 12900}],
    },
}
_REFUNDS: dict[str, dict[str, Any]] = {}

_CATEGORIES = {
    "billing": ("refund", "charge", "invoice", "payment", "paid", "money"),
    "shipping": ("delivery", "shipping", "shipped", "package", "arrive", "tracking", "late"),
    "technical": ("error", "broken", "crash", "bug", "not working", "login", "password"),
    "account": ("account", "email", "profile", "delete my", "username"),
}
_URGENT = ("urgent", "asap", "immediately", "angry", "lawyer", "never again")


@worker.tool("classify_ticket", subject="support.tickets.classify")
async def classify_ticket(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    text = f"{args['subject']} {args['body']}".lower()
    scores = {name: sum(word in text for word in words) for name, words in _CATEGORIES.items()}
    category, hits = max(scores.items(), key=lambda kv: kv[1])
    if hits == 0:
        category = "other"
    urgent = any(word in text for word in _URGENT)
    return {
        "category": category,
        "priority": "high" if urgent else ("normal" if hits else "low"),
        "confidence": round(min(0.5 + 0.2 * hits, 0.95), 2) if hits else 0.3,
    }


@worker.tool("lookup_order", subject="support.orders.lookup")
async def lookup_order(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    order = ORDERS.get(args["order_id"])
    if order is None:
        raise ToolFailure("order_not_found", f"no order {args['order_id']}", details={"order_id": args["order_id"]})
    return {"order_id": args["order_id"], **order}


@worker.tool("refund_order", subject="support.orders.refund")
async def refund_order(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    order_id, amount = args["order_id"], args["amount_cents"]
    order = ORDERS.get(order_id)
    if order is None:
        raise ToolFailure("order_not_found", f"no order {order_id}", details={"order_id": order_id})
    await ctx.progress(1, 4, "checking the order")
    refunded = sum(r["amount_cents"] for r in _REFUNDS.values() if r["order_id"] == order_id)
    if amount > order["total_cents"] - refunded:
        raise ToolFailure(
            "amount_too_large",
            f"at most {order['total_cents'] - refunded} cents can be refunded",
            details={"requested": amount, "refundable": order["total_cents"] - refunded},
        )
    if amount > 10_000 and not await ctx.confirm(
        f"Refund {amount / 100:.2f} {order['currency']} of order {order_id} to {order['customer']}?"
    ):
        raise ToolFailure("not_confirmed", "the refund was not confirmed")
    await asyncio.sleep(args.get("step_delay", 0.2))
    await ctx.progress(2, 4, "contacting the payment provider")
    refund = _REFUNDS.get(ctx.idempotency_key)  # the provider's idempotency: same key, same refund
    if refund is None:
        refund = {"refund_id": f"RF-{len(_REFUNDS) + 1:05d}", "order_id": order_id, "amount_cents": amount}
        _REFUNDS[ctx.idempotency_key] = refund
    await asyncio.sleep(args.get("step_delay", 0.2))
    await ctx.progress(3, 4, "notifying the customer")
    await asyncio.sleep(args.get("step_delay", 0.2))
    await ctx.progress(4, 4, "done")
    return {**refund, "currency": order["currency"], "status": "refunded", "reason": args["reason"]}
