// A worker of the mcp-gateway bus contract (docs/bus-contract.md), in plain JavaScript on the `nats` package.
// It does what the Python SDK (worker/mcp_gateway_worker/_worker.py) does:
//   - one durable pull consumer per tool subject, with the SDK's settings (explicit ack, ack_wait 30 s,
//     max_deliver 5, max_ack_pending max(4 x concurrency, 64)), shared by every instance of any language;
//   - streams: created when missing, with the gateway's settings; an existing stream is never changed;
//   - credentials: a user and password (or a .creds file), replies on its own inbox prefix `_INBOX_<user>`; what
//     NATS refuses (a permissions violation) is an error naming the subject and the user, never a bare timeout;
//   - events published with JetStream to the command's reply_subject, Nats-Msg-Id `<workflow>.<attempt>.<seq>`,
//     the command's traceparent, seq from 0 per attempt (attempt: the command's, or the delivery count);
//   - the command acknowledged only once its terminal event is stored, working-acks (+WPI) every ack_wait/3
//     meanwhile, a redelivered command it already finished answered from memory;
//   - cancels on core NATS stop the handler (a `failed` event with the reason); a command past its deadline
//     is answered `deadline_exceeded`; questions go out as `input_required`, answers come on core NATS;
//   - stop(): no more fetching, running handlers get `drainTimeout` to finish, the rest are handed back (nak).

import { readFileSync } from "node:fs";

import { connect, credsAuthenticator, headers as natsHeaders } from "nats";

import {
  CONTRACT_VERSION,
  ContractError,
  Headers,
  SYSTEM_FAILURES,
  Subjects,
  consumerConfig,
  decodeAnswer,
  decodeCancel,
  decodeCommand,
  durableName,
  encodeEvent,
  errorInfo,
  eventKey,
  inputRequest,
  streamConfigs,
} from "./contract.js";
import { Logger } from "./log.js";

/** Milliseconds a handler may run before the worker reports `started`. */
const STARTED_AFTER = 50;
/** Milliseconds before a command whose events this worker may not publish is offered again (to one that may). */
const REFUSED_RETRY = 5000;
const TERMINAL = new Set(["completed", "failed"]);
const LOG_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

/** Throw from a handler to fail the workflow with a stable code the client sees. */
export class ToolFailure extends Error {
  constructor(code, message, { retryable = false, details } = {}) {
    if (SYSTEM_FAILURES.has(code)) {
      throw new Error(`ToolFailure code ${JSON.stringify(code)} is reserved for system failures; use a code of your own`);
    }
    super(message);
    this.name = "ToolFailure";
    this.info = errorInfo(code, message, { retryable, details });
  }
}

/** Return it from a handler for MCP content blocks, with or without a structured result. */
export class ToolResult {
  constructor(content, structured = undefined) {
    this.content = content;
    this.structured = structured;
  }
}

/** Why a handler's signal was aborted: the gateway stopped the workflow (a `failed` event), or we stop (nak). */
class StoppedByGateway extends Error {
  name = "StoppedByGateway";
  constructor(reason) {
    super(`stopped: ${reason}`);
    this.reason = reason;
  }
}
/** The bus failed while the worker itself reported (not the handler): the command goes back for redelivery. */
class BusFailure extends Error {
  name = "BusFailure";
}
class HandedBack extends Error {
  name = "HandedBack";
  constructor() {
    super("the worker is stopping");
  }
}

const isPlainObject = (value) =>
  typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype;
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const errorText = (err) => (err instanceof Error ? err.message || err.name : String(err));
const notFound = (err) => err?.code === "404" || [10014, 10059].includes(err?.api_error?.err_code);
const isRefusal = (err) => err?.code === "PERMISSIONS_VIOLATION" || err?.cause?.code === "PERMISSIONS_VIOLATION";

/** NATS refused this worker's user a publish or a subscription: the subject, the user, and where to look. */
export class PermissionDenied extends Error {
  name = "PermissionDenied";
  constructor(user, err, doing = undefined) {
    const ctx = err?.permissionContext ?? err?.cause?.permissionContext;
    const what = ctx ? `${ctx.operation === "publish" ? "publish to" : "subscribe to"} "${ctx.subject}"` : errorText(err);
    super(
      `NATS refused ${user ? `user "${user}"` : "this connection's user"} permission to ${what}` +
        (doing ? ` (while trying to ${doing})` : "") +
        ": the user's permissions do not allow it (for the embedded NATS, see `mcp-gateway bus-user list`)",
    );
    this.user = user;
    this.subject = ctx?.subject;
    this.operation = ctx?.operation;
  }
}

/** The URL(s) with each password (or token) replaced by `***`, for logs. */
export function redactUrl(url) {
  return String(url)
    .split(",")
    .map((one) => one.trim().replace(/^([a-z]+:\/\/)?([^@/]*)@/i, (_, scheme = "", userinfo) =>
      `${scheme}${userinfo.includes(":") ? userinfo.split(":")[0] + ":***" : "***"}@`,
    ))
    .join(",");
}

/** The servers of a URL list without their credentials, and the first credentials found in it (the `nats`
 * package does not take them from a URL). */
function splitCredentials(url) {
  let user, password;
  const servers = String(url)
    .split(",")
    .map((one) => {
      const match = one.trim().match(/^([a-z]+:\/\/)?([^@/]*)@(.*)$/i);
      if (!match) return one.trim();
      const [, scheme = "", userinfo, rest] = match;
      const [name, ...secret] = userinfo.split(":");
      if (user === undefined && secret.length) {
        user = decodeURIComponent(name);
        password = decodeURIComponent(secret.join(":"));
      }
      return `${scheme}${rest}`;
    });
  return { servers, user, password };
}

/** What a handler sees: the command, and ways to report progress and ask questions. */
export class ToolContext {
  #command;
  #emit;
  #questions;
  #asked = 0;

  constructor(command, emit, questions, signal) {
    this.#command = command;
    this.#emit = emit;
    this.#questions = questions;
    /** Aborted when the gateway stops the workflow or the worker stops: stop working then. */
    this.signal = signal;
    /** Whether the handler has reported anything yet (progress, a question). */
    this.reported = false;
  }

  get workflowId() {
    return this.#command.workflow_id;
  }
  /** Use it for side effects elsewhere (payments, tickets): the same key on every redelivery. */
  get idempotencyKey() {
    return `${this.#command.workflow_id}.${this.#command.attempt}`;
  }
  get tool() {
    return this.#command.tool;
  }
  get caller() {
    return this.#command.caller;
  }
  get deadline() {
    return this.#command.deadline;
  }
  get attempt() {
    return this.#command.attempt;
  }

  /** Report progress; the client sees an MCP progress notification. */
  async progress(progress, total = undefined, message = undefined) {
    if (typeof progress !== "number" || !Number.isFinite(progress)) throw new TypeError("progress must be a number");
    this.reported = true;
    await this.#emit("progress", { progress, total, message });
  }

  /** A log line for the client of the call (MCP notifications/message). */
  async log(level, message, logger = undefined) {
    if (!LOG_LEVELS.includes(level)) throw new TypeError(`log level must be one of ${LOG_LEVELS.join(", ")}`);
    await this.#emit("log", { level, message, logger });
  }

  /** Whether the calling client declared it can answer this kind of question; true when not known. */
  canAsk(ability) {
    const known = this.#command.caller.can_answer;
    return known == null || known.includes(ability);
  }

  #key(key) {
    this.#asked += 1;
    return key ?? `q${this.#asked}`;
  }

  async #put(request) {
    this.reported = true;
    return this.#questions.ask(request);
  }

  /** Ask the user (a confirmation without `schema`, values with a flat object schema); resolves to the
   * answer {action: accept | decline | cancel, content}. Questions are numbered q1, q2, ... in the order
   * asked (or named by `key`), so a redelivered command asking again is sent the answer already given. */
  async ask(message, schema = undefined, { key } = {}) {
    const kind = schema ? "form" : "confirm";
    return this.#put(inputRequest({ id: this.#key(key), kind, message, schema }));
  }

  /** Ask for a yes or no; true only when the user accepted. */
  async confirm(message, { key } = {}) {
    return (await this.ask(message, undefined, { key })).action === "accept";
  }

  /** Ask the client's model (MCP sampling); resolves to its CreateMessageResult. */
  async sample(messages, { maxTokens, systemPrompt, key } = {}) {
    const sampling = { messages, maxTokens, ...(systemPrompt != null ? { systemPrompt } : {}) };
    const answer = await this.#put(inputRequest({ id: this.#key(key), kind: "sampling", message: "sampling", sampling }));
    if (answer.action !== "accept" || answer.content == null) {
      throw new ToolFailure("sampling_refused", `the client did not sample (${answer.action})`);
    }
    return answer.content;
  }

  /** The client's roots (MCP roots/list): [{uri, name?}, ...]. */
  async roots({ key } = {}) {
    const answer = await this.#put(inputRequest({ id: this.#key(key), kind: "roots", message: "roots" }));
    if (answer.action !== "accept" || answer.content == null) {
      throw new ToolFailure("roots_refused", `the client did not list its roots (${answer.action})`);
    }
    return [...(answer.content.roots ?? [])];
  }

  /** Wait `ms` milliseconds, or until the work is stopped (then it rejects with the reason). */
  sleep(ms) {
    return new Promise((resolve, reject) => {
      if (this.signal.aborted) return reject(this.signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(this.signal.reason);
      };
      const timer = setTimeout(() => {
        this.signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      this.signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/** A command's questions: those asked at the same moment go out in one `input_required` event; each answer
 * (core NATS, `<prefix>.ctl.input.<workflow id>`) wakes its own ask. At the deadline the answer is `cancel`. */
class Questions {
  #waiting = new Map();
  #batch = [];
  #sending = false;
  #subscription = null;
  #closed = false;

  constructor(nc, subject, command, emit, signal, log, user) {
    this.nc = nc;
    this.user = user;
    this.subject = subject;
    this.command = command;
    this.emit = emit;
    this.signal = signal;
    this.log = log;
  }

  ask(request) {
    if (this.#waiting.has(request.id)) {
      throw new Error(`question ${JSON.stringify(request.id)} is already being asked; give each question its own key`);
    }
    if (this.signal.aborted) return Promise.reject(this.signal.reason);
    return new Promise((resolve, reject) => {
      const wait = Math.min(Math.max(this.command.deadline.getTime() - Date.now(), 1), 2 ** 31 - 1);
      const settle = () => {
        clearTimeout(timer);
        this.signal.removeEventListener("abort", onAbort);
        this.#waiting.delete(request.id);
      };
      const onAbort = () => {
        settle();
        reject(this.signal.reason);
      };
      const timer = setTimeout(() => {
        settle();
        resolve({ v: 1, workflow_id: this.command.workflow_id, request_id: request.id, action: "cancel", content: null });
      }, wait);
      this.signal.addEventListener("abort", onAbort, { once: true });
      this.#waiting.set(request.id, {
        resolve: (answer) => (settle(), resolve(answer)),
        reject: (err) => (settle(), reject(err)),
      });
      this.#batch.push(request);
      if (!this.#sending) {
        this.#sending = true;
        setImmediate(() => this.#send()); // questions asked at the same moment join this one
      }
    });
  }

  async #send() {
    const batch = this.#batch.filter((r) => this.#waiting.has(r.id));
    this.#batch = [];
    this.#sending = false;
    if (!batch.length || this.#closed) return;
    try {
      if (this.#subscription === null) {
        // Listen before asking (the SUB goes out before the event), so no answer is missed.
        let refused = null;
        this.#subscription = this.nc.subscribe(this.subject, {
          callback: (err, msg) => (err ? (refused = err) : this.#onAnswer(msg)),
        });
        // A refused subscription is reported before the flush is answered (NATS away: go on unknowing).
        await this.nc.flush().catch(() => {});
        if (refused !== null && isRefusal(refused)) throw new PermissionDenied(this.user, refused, "hear the answers");
      }
      await this.emit("input_required", { requests: batch });
      this.log.debug("worker.asked", { questions: batch.map((r) => r.id) });
    } catch (err) {
      for (const request of batch) this.#waiting.get(request.id)?.reject(err);
    }
  }

  #onAnswer(msg) {
    let answer;
    try {
      answer = decodeAnswer(msg.data);
    } catch (err) {
      this.log.warning("worker.bad_answer", { error: errorText(err) });
      return;
    }
    this.#waiting.get(answer.request_id)?.resolve(answer);
  }

  close() {
    this.#closed = true;
    if (this.#subscription !== null) {
      try {
        this.#subscription.unsubscribe();
      } catch {
        // the connection is closing: nothing to unsubscribe from
      }
      this.#subscription = null;
    }
  }
}

/** A bounded map that forgets its oldest keys. */
class Recent extends Map {
  constructor(limit) {
    super();
    this.limit = limit;
  }
  set(key, value) {
    this.delete(key);
    super.set(key, value);
    while (this.size > this.limit) this.delete(this.keys().next().value);
    return this;
  }
}

export class Worker {
  #routes = new Map();
  #running = new Set();
  #slotWaiters = [];
  #handlers = new Map(); // workflow id -> AbortController of its running handler
  #done;
  #stopped;
  #stopping = false;
  #loops = [];
  #nc = null;
  #js = null;
  #jsm = null;
  #user = undefined;

  constructor(
    name,
    {
      prefix = "mcpgw",
      maxConcurrency = 16,
      ackWait = 30,
      maxDeliver = 5,
      drainTimeout = 10,
      rememberedResults = 10_000,
      logger = new Logger(),
    } = {},
  ) {
    this.name = name;
    this.subjects = new Subjects(prefix);
    this.maxConcurrency = maxConcurrency;
    this.ackWait = ackWait;
    this.maxDeliver = maxDeliver;
    this.drainTimeout = drainTimeout;
    this.log = logger;
    this.#done = new Recent(rememberedResults);
    this.#stopped = new Recent(rememberedResults);
  }

  /** Register the handler of tool `name`, whose commands arrive on `subject` (as in the tool's config). */
  tool(name, subject, handler) {
    if (this.#routes.has(name)) throw new Error(`worker ${this.name} already has a handler for tool ${name}`);
    this.#routes.set(name, { tool: name, subject, handler });
    return this;
  }

  get tools() {
    return [...this.#routes.keys()];
  }

  /** Connect, ensure streams and consumers, and handle commands until stop(). As NATS user `user` with
   * `password`, or with a .creds file (`creds`: its path), or with the credentials in the URL; replies come to the
   * user's own inbox prefix, `_INBOX_<user>`. Rejects with PermissionDenied when NATS refuses what a worker needs. */
  async start(url, { user, password, creds } = {}) {
    if (Boolean(user) !== Boolean(password)) throw new Error("a NATS user needs its password (and a password its user)");
    if (creds && user) throw new Error("give a .creds file or a user and password, not both");
    const inUrl = splitCredentials(url);
    if (!user && !creds && inUrl.user) [user, password] = [inUrl.user, inUrl.password];
    this.#user = user;
    this.#nc = await connect({
      servers: inUrl.servers,
      name: `mcpgw-worker-${this.name}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      ...(user ? { user, pass: password } : {}),
      ...(creds ? { authenticator: credsAuthenticator(readFileSync(creds)) } : {}),
      ...(this.#user ? { inboxPrefix: `_INBOX_${this.#user}` } : {}),
    });
    this.#watchStatus(this.#nc).catch(() => {}); // ends when the connection closes
    const subjects = [...new Set([...this.#routes.values()].map((r) => r.subject))].sort();
    const consumers = [];
    let refused = null;
    try {
      this.#js = this.#nc.jetstream();
      this.#jsm = await this.#nc.jetstreamManager({ checkAPI: false });
      await this.#ensureStreams();
      this.#nc.subscribe(this.subjects.allCancels, {
        callback: (err, msg) => (err ? (refused = err) : this.#onCancel(msg)),
      });
      for (const subject of subjects) consumers.push(await this.#consumer(subject));
      await this.#nc.flush(); // a refused subscription is reported before the flush is answered
    } catch (err) {
      await this.#nc.close().catch(() => {});
      throw isRefusal(err) ? new PermissionDenied(this.#user, err, "set up its streams and consumers") : err;
    }
    if (refused !== null) {
      await this.#nc.close().catch(() => {});
      throw isRefusal(refused) ? new PermissionDenied(this.#user, refused, "subscribe") : refused;
    }
    this.#stopping = false;
    this.#loops = consumers.map(({ consumer, subject }) => this.#fetchLoop(consumer, subject));
    this.log.info("worker.started", {
      worker: this.name,
      tools: this.tools,
      url: redactUrl(url),
      user: this.#user,
      prefix: this.subjects.prefix,
      consumers: subjects.map(durableName),
    });
  }

  /** Stop fetching, give running handlers `drainTimeout` seconds, hand back (nak) the rest, close. */
  async stop() {
    if (this.#nc === null) return;
    this.#stopping = true;
    for (const wake of this.#slotWaiters.splice(0)) wake(); // a loop waiting for capacity stops waiting
    await Promise.allSettled(this.#loops); // each ends with its current fetch (at most a second)
    if (this.#running.size) {
      let timer;
      await Promise.race([
        Promise.allSettled([...this.#running]),
        new Promise((resolve) => (timer = setTimeout(resolve, this.drainTimeout * 1000))),
      ]);
      clearTimeout(timer);
      for (const controller of this.#handlers.values()) controller.abort(new HandedBack());
      await Promise.allSettled([...this.#running]);
    }
    try {
      await this.#nc.drain(); // flushes what was published and acked, then closes
    } catch (err) {
      this.log.warning("worker.close_failed", { error: errorText(err) });
    }
    this.#nc = null;
    this.log.info("worker.stopped", { worker: this.name });
  }

  /** Resolves when the connection closes (after stop(), or if NATS closed it: then with the error). */
  closed() {
    return this.#nc?.closed() ?? Promise.resolve();
  }

  async #watchStatus(nc) {
    let lastError = null;
    for await (const status of nc.status()) {
      if (status.type === "disconnect") this.log.warning("worker.disconnected", { worker: this.name });
      else if (status.type === "reconnect") {
        lastError = null;
        this.log.info("worker.reconnected", { worker: this.name });
      } else if (status.type === "error" && String(status.data) !== lastError) {
        lastError = String(status.data); // while NATS is away, say so once
        this.log.warning("worker.nats_error", { worker: this.name, error: lastError });
      }
    }
  }

  /** Create the streams that are missing, with the gateway's settings; leave existing ones as they are. */
  async #ensureStreams() {
    for (const config of streamConfigs(this.subjects)) {
      try {
        await this.#jsm.streams.info(config.name);
      } catch (err) {
        if (!notFound(err)) throw err;
        try {
          await this.#jsm.streams.add(config);
          this.log.info("worker.stream_created", { stream: config.name });
        } catch (err) {
          if (isRefusal(err)) {
            throw new PermissionDenied(this.#user, err, `create the missing stream ${config.name} (start the gateway: it creates its streams)`);
          }
          await this.#jsm.streams.info(config.name); // created meanwhile by another process: theirs stands
        }
      }
    }
  }

  /** The subject's durable consumer: the existing one as it is, else created with the SDK's settings. */
  async #consumer(subject) {
    const stream = this.subjects.commandStream;
    const wanted = consumerConfig(this.subjects, subject, {
      ackWait: this.ackWait,
      maxDeliver: this.maxDeliver,
      maxConcurrency: this.maxConcurrency,
    });
    let info;
    try {
      info = await this.#jsm.consumers.info(stream, wanted.durable_name);
    } catch (err) {
      if (!notFound(err)) throw err;
      try {
        info = await this.#jsm.consumers.add(stream, wanted);
      } catch {
        info = await this.#jsm.consumers.info(stream, wanted.durable_name); // another instance made it first
      }
    }
    const differs = ["filter_subject", "ack_policy", "ack_wait", "max_deliver"].filter(
      (key) => info.config[key] !== wanted[key],
    );
    if (differs.length) {
      this.log.warning("worker.consumer_differs", {
        consumer: wanted.durable_name,
        keys: differs,
        note: "an existing consumer is used as it is",
      });
    }
    return { consumer: await this.#js.consumers.get(stream, wanted.durable_name), subject };
  }

  async #slot() {
    while (this.#running.size >= this.maxConcurrency && !this.#stopping) {
      await new Promise((resolve) => this.#slotWaiters.push(resolve));
    }
  }

  async #fetchLoop(consumer, subject) {
    while (!this.#stopping) {
      await this.#slot(); // wait for capacity before asking for work
      if (this.#stopping) break;
      const want = Math.max(1, this.maxConcurrency - this.#running.size);
      try {
        const messages = await consumer.fetch({ max_messages: want, expires: 1000 });
        for await (const msg of messages) {
          await this.#slot();
          if (this.#stopping) {
            msg.nak(); // pulled while stopping: straight back, for another instance
            continue;
          }
          const task = this.#handle(msg, subject).catch((err) => this.log.error("worker.handle_crashed", { error: errorText(err) }));
          this.#running.add(task);
          task.finally(() => {
            this.#running.delete(task);
            this.#slotWaiters.shift()?.();
          });
        }
      } catch (err) {
        if (this.#stopping) break;
        this.log.warning("worker.fetch_failed", { error: errorText(err) });
        await delay(500);
      }
    }
  }

  /** Whether the gateway stopped this attempt of the workflow (a later one, an admin's retry, may run). */
  #stoppedAttempt(workflowId, attempt) {
    if (!this.#stopped.has(workflowId)) return false;
    const stopped = this.#stopped.get(workflowId);
    return stopped.attempt === null || stopped.attempt === undefined || attempt <= stopped.attempt;
  }

  #onCancel(msg) {
    let cancel;
    try {
      cancel = decodeCancel(msg.data);
    } catch (err) {
      this.log.warning("worker.bad_cancel", { error: errorText(err) });
      return;
    }
    this.#stopped.set(cancel.workflow_id, { reason: cancel.reason, attempt: cancel.attempt });
    this.log.debug("worker.cancel_heard", { workflow_id: cancel.workflow_id, reason: cancel.reason });
    const handler = this.#handlers.get(cancel.workflow_id);
    if (handler !== undefined) {
      this.log.info("worker.stopping_handler", { workflow_id: cancel.workflow_id, reason: cancel.reason });
      handler.abort(new StoppedByGateway(cancel.reason));
    }
  }

  /** Publish one event. JetStream de-duplicates by Nats-Msg-Id across the whole events stream, and another tool's
   * worker could take an event's id first (on its own subject, where the gateway refuses it) so that the real one
   * is dropped: a `fresh` event JetStream calls a duplicate goes once more without the id (the gateway applies
   * each event once by its key anyway). */
  async #publish(subject, data, traceparent, msgID, fresh = true) {
    const headers = natsHeaders();
    headers.set(Headers.SCHEMA, String(CONTRACT_VERSION));
    if (traceparent) headers.set(Headers.TRACEPARENT, traceparent);
    const ack = await this.#js.publish(subject, data, { msgID, headers, timeout: 5000 }); // msgID: Nats-Msg-Id
    if (!(fresh && ack.duplicate)) return ack;
    this.log.warning("worker.event_id_taken", { subject, msg_id: msgID, note: "published again without it" });
    return this.#js.publish(subject, data, { headers, timeout: 5000 });
  }

  /** One command, from the consumer of tool subject `subject`. */
  async #handle(msg, subject) {
    let command;
    try {
      command = decodeCommand(msg.data);
    } catch (err) {
      if (!(err instanceof ContractError)) throw err;
      this.log.error("worker.bad_command", { error: err.message, subject: msg.subject });
      msg.term();
      return;
    }
    if (command.subject == null) {
      // A version 1 command (from a gateway before contract 2): its events go to the version 2 subject.
      command.subject = subject;
      command.reply_subject = this.subjects.event(subject, command.workflow_id);
    }
    const id = command.workflow_id;
    const key = `${id}.${command.attempt}`;
    const traceparent = msg.headers?.get(Headers.TRACEPARENT) || undefined;
    const log = this.log.bind({ workflow_id: id, tool: command.tool, attempt: command.attempt, trace: traceparent });
    const remembered = this.#done.get(key);
    if (remembered !== undefined) {
      log.info("worker.redelivered_done");
      try {
        await this.#publish(command.reply_subject, remembered.data, traceparent, remembered.msgID, false);
      } catch (err) {
        if (isRefusal(err)) {
          log.error("worker.events_refused", { error: new PermissionDenied(this.#user, err).message });
          msg.nak(REFUSED_RETRY);
        } else {
          log.warning("worker.publish_failed", { error: errorText(err) });
          msg.nak(1000);
        }
        return;
      }
      await this.#settle(msg, remembered, log);
      return;
    }
    // A redelivered command (its worker died) is a new attempt for the events: numbered afresh, not taken for
    // duplicates of the first run's, so that a question asked again gets the recorded answer re-sent.
    const attempt = Math.max(command.attempt, msg.info.deliveryCount || 1);
    let seq = 0;
    let settled = false;
    const emit = async (kind, fields = {}) => {
      if (settled) throw new Error(`the command of workflow ${id} is settled; nothing more can be reported`);
      const event = { workflowId: id, attempt, seq: seq++, kind, ...fields };
      if (TERMINAL.has(kind)) settled = true;
      const data = encodeEvent(event);
      const msgID = eventKey(id, attempt, event.seq);
      await this.#publish(command.reply_subject, data, traceparent, msgID);
      return { data, msgID };
    };
    const heartbeat = setInterval(() => {
      try {
        msg.working();
      } catch {
        // the connection is away; the next beat (or redelivery) takes over
      }
    }, (this.ackWait * 1000) / 3);
    let final;
    try {
      const route = this.#routes.get(command.tool);
      if (route === undefined) {
        final = await emit("failed", {
          error: errorInfo("unknown_tool", `worker ${this.name} has no handler for tool ${command.tool}`),
        });
      } else if (this.#stoppedAttempt(id, attempt)) {
        const { reason } = this.#stopped.get(id);
        final = await emit("failed", { error: errorInfo(reason, `not started: ${reason}`) });
      } else if (command.deadline.getTime() <= Date.now()) {
        final = await emit("failed", {
          error: errorInfo("deadline_exceeded", "the command arrived after its deadline"),
        });
      } else {
        final = await this.#run(route, command, emit, log);
      }
    } catch (err) {
      clearInterval(heartbeat);
      if (err instanceof HandedBack) {
        msg.nak();
        log.info("worker.handed_back");
      } else if (isRefusal(err)) {
        // NATS refuses this user the events: for a worker that may publish them
        log.error("worker.events_refused", { error: new PermissionDenied(this.#user, err).message });
        msg.nak(REFUSED_RETRY);
      } else {
        log.warning("worker.publish_failed", { error: errorText(err) }); // leave the command for redelivery
        msg.nak(1000);
      }
      return;
    }
    clearInterval(heartbeat);
    this.#done.set(key, final);
    await this.#settle(msg, final, log);
  }

  /** The terminal event is stored: now the command is done (the ack awaited, the server confirms it). */
  async #settle(msg, final, log) {
    try {
      await msg.ackAck({ timeout: 5000 });
      log.debug("worker.settled", { event_key: final.msgID });
    } catch (err) {
      log.warning("worker.ack_failed", { error: errorText(err), note: "a redelivery is answered from memory" });
    }
  }

  async #run(route, command, emit, log) {
    const controller = new AbortController();
    this.#handlers.set(command.workflow_id, controller);
    const questions = new Questions(
      this.#nc,
      this.subjects.answer(command.subject, command.workflow_id),
      command,
      emit,
      controller.signal,
      log,
      this.#user,
    );
    const ctx = new ToolContext(command, emit, questions, controller.signal);
    let result;
    try {
      const work = Promise.resolve().then(() => route.handler(ctx, command.arguments));
      const stopped = new Promise((_, reject) =>
        controller.signal.addEventListener("abort", () => reject(controller.signal.reason), { once: true }),
      );
      const outcome = Promise.race([work, stopped]);
      outcome.catch(() => {}); // observed below; a handler that ignores the signal and fails later is no crash
      work.catch(() => {});
      // `started` only for work that takes a while: a quick handler's result is its first sign of life.
      let timer;
      const first = await Promise.race([
        outcome.then(
          () => "done",
          () => "done",
        ),
        new Promise((resolve) => (timer = setTimeout(() => resolve("slow"), STARTED_AFTER))),
      ]);
      clearTimeout(timer);
      if (first === "slow" && !ctx.reported) {
        await emit("started").catch((err) => {
          throw new BusFailure(errorText(err), { cause: err });
        });
      }
      result = await outcome;
    } catch (err) {
      if (err instanceof HandedBack || err instanceof BusFailure) throw err;
      if (isRefusal(err)) throw err; // its events cannot go out: nothing to report them with
      if (err instanceof PermissionDenied) {
        log.error("worker.answers_refused", { error: err.message }); // it cannot hear answers: say so, as a failure
        return emit("failed", { error: errorInfo("worker_error", err.message) });
      }
      if (err instanceof StoppedByGateway) {
        log.info("worker.stopped_by_gateway", { reason: err.reason });
        return emit("failed", { error: errorInfo(err.reason, `stopped: ${err.reason}`) });
      }
      if (err instanceof ToolFailure) {
        log.info("worker.failed", { code: err.info.code });
        return emit("failed", { error: err.info });
      }
      log.error("worker.handler_crashed", { error: errorText(err), stack: err?.stack });
      return emit("failed", { error: errorInfo("worker_error", `${err?.name ?? "Error"}: ${errorText(err)}`) });
    } finally {
      this.#handlers.delete(command.workflow_id);
      questions.close();
      // Whatever ended it, the handler's work is over: its sleeps and questions stop too.
      if (!controller.signal.aborted) controller.abort(new Error("the command is settled"));
    }
    if (result instanceof ToolResult) {
      return emit("completed", { result: result.structured, content: result.content });
    }
    if (!isPlainObject(result)) {
      const type = result === null ? "null" : Array.isArray(result) ? "array" : typeof result;
      return emit("failed", {
        error: errorInfo("worker_error", `handler returned ${type}, expected a JSON object`),
      });
    }
    return emit("completed", { result });
  }
}
