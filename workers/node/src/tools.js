// The tools this worker serves:
//   echo         (subject diagnostics.echo, config/tools/diagnostics.yaml): returns its text and the workflow id,
//                as mcp_gateway/examples/diagnostics.py does.
//   node_refund  (subject nodejs.refund, tests/tools/node.yaml): refund_order of mcp_gateway/examples/support.py
//                in JavaScript: four progress steps, a confirmation asked of the user above 100.00, and the
//                workflow's idempotency key for the "payment provider", so a redelivery never refunds twice.

import { ToolFailure } from "./worker.js";

export const ORDERS = {
  "ORD-1001": { status: "delivered", customer: "ada@example.com", total_cents: 4999, currency: "EUR" },
  "ORD-1002": { status: "shipped", customer: "alan@example.com", total_cents: 2598, currency: "EUR" },
  "ORD-1003": { status: "processing", customer: "grace@example.com", total_cents: 12900, currency: "USD" },
};

const refunds = new Map(); // idempotency key -> refund (the payment provider's memory)

export async function echo(ctx, args) {
  return { text: args.text, workflow_id: ctx.workflowId };
}

export async function nodeRefund(ctx, args) {
  const { order_id: orderId, amount_cents: amount, reason } = args;
  const pause = (args.step_delay ?? 0.2) * 1000;
  const order = ORDERS[orderId];
  if (order === undefined) throw new ToolFailure("order_not_found", `no order ${orderId}`, { details: { order_id: orderId } });
  await ctx.progress(1, 4, "checking the order");
  let refunded = 0;
  for (const refund of refunds.values()) if (refund.order_id === orderId) refunded += refund.amount_cents;
  const refundable = order.total_cents - refunded;
  if (amount > refundable) {
    throw new ToolFailure("amount_too_large", `at most ${refundable} cents can be refunded`, {
      details: { requested: amount, refundable },
    });
  }
  if (
    amount > 10_000 &&
    !(await ctx.confirm(`Refund ${(amount / 100).toFixed(2)} ${order.currency} of order ${orderId} to ${order.customer}?`))
  ) {
    throw new ToolFailure("not_confirmed", "the refund was not confirmed");
  }
  await ctx.sleep(pause);
  await ctx.progress(2, 4, "contacting the payment provider");
  let refund = refunds.get(ctx.idempotencyKey); // the provider's idempotency: same key, same refund
  if (refund === undefined) {
    refund = { refund_id: `RF-N${String(refunds.size + 1).padStart(5, "0")}`, order_id: orderId, amount_cents: amount };
    refunds.set(ctx.idempotencyKey, refund);
  }
  await ctx.sleep(pause);
  await ctx.progress(3, 4, "notifying the customer");
  await ctx.sleep(pause);
  await ctx.progress(4, 4, "done");
  return { ...refund, currency: order.currency, status: "refunded", reason };
}

/** Register the tools on `worker`. */
export function register(worker) {
  return worker.tool("echo", "diagnostics.echo", echo).tool("node_refund", "nodejs.refund", nodeRefund);
}
