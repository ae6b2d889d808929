// Run the Node worker: node src/main.js (or npm start). Settings by environment:
//   MCPGW_NATS_URL        NATS to connect to (default nats://127.0.0.1:4222; `mcp-gateway nats-url` prints the
//                         embedded one of a running gateway)
//   MCPGW_NATS_USER, MCPGW_NATS_PASSWORD  its NATS user (e.g. one of `mcp-gateway bus-user create`), or
//   MCPGW_NATS_CREDS      a NATS .creds file (or credentials in the URL: nats://user:password@host:4222)
//   MCPGW_SUBJECT_PREFIX  the gateway's subject prefix (default mcpgw)
//   MCPGW_LOG_LEVEL       debug | info | warning | error (default info); logs are JSON lines on stderr
//   MCPGW_MAX_CONCURRENCY commands handled at once (default 16)
// SIGINT or SIGTERM drains: no more fetching, running commands finish (up to 10 s), the rest are handed back.

import { Logger } from "./log.js";
import { register } from "./tools.js";
import { Worker, redactUrl } from "./worker.js";

const env = process.env;
const logger = new Logger(env.MCPGW_LOG_LEVEL || "info");
const url = env.MCPGW_NATS_URL || "nats://127.0.0.1:4222";
const concurrency = Number.parseInt(env.MCPGW_MAX_CONCURRENCY || "16", 10);
if (!(concurrency >= 1)) {
  logger.error("worker.bad_setting", { setting: "MCPGW_MAX_CONCURRENCY", value: env.MCPGW_MAX_CONCURRENCY });
  process.exit(2);
}

const worker = register(
  new Worker("node", { prefix: env.MCPGW_SUBJECT_PREFIX || "mcpgw", maxConcurrency: concurrency, logger }),
);

let stopping = null;
function stop(signal) {
  if (stopping !== null) return;
  logger.info("worker.stopping", { signal });
  stopping = worker.stop().then(
    () => process.exit(0),
    (err) => {
      logger.error("worker.stop_failed", { error: err.message });
      process.exit(1);
    },
  );
}
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGTERM", () => stop("SIGTERM"));

const credentials = {
  user: env.MCPGW_NATS_USER || undefined,
  password: env.MCPGW_NATS_PASSWORD || undefined,
  creds: env.MCPGW_NATS_CREDS || undefined,
};
try {
  await worker.start(url, credentials);
} catch (err) {
  logger.error("worker.start_failed", { error: err.message, url: redactUrl(url) });
  process.exit(1);
}
const closed = await worker.closed();
if (stopping === null) {
  // NATS closed the connection under us (not a drain of ours): say so and exit non-zero, for a supervisor.
  logger.error("worker.connection_closed", { error: closed instanceof Error ? closed.message : undefined });
  process.exit(1);
}
