// The bus contract, version 2 (docs/bus-contract.md), as this worker needs it: subjects, headers, the stream
// and consumer settings, and strict decoding of what the gateway sends (command, cancel, input answer).
// The executable form on the Python side is worker/mcp_gateway_worker/contract/; docs/schemas/ has its
// JSON Schemas. Decoding is strict like the Python models: an unknown key, a missing field or a wrong type is
// a ContractError naming the field.

import { AckPolicy, DiscardPolicy, RetentionPolicy, StorageType, nanos } from "nats";

/** The contract's version: the `Mcpgw-Schema` header. 2 put the tool subject into the event and answer subjects. */
export const CONTRACT_VERSION = 2;
/** The version of the event envelope (`v` of an event body): unchanged by contract 2. */
export const EVENT_VERSION = 1;

export const Headers = Object.freeze({
  MSG_ID: "Nats-Msg-Id",
  SCHEMA: "Mcpgw-Schema",
  WORKFLOW_ID: "Mcpgw-Workflow-Id",
  TOOL: "Mcpgw-Tool",
  TRACEPARENT: "traceparent",
});

/** Failure codes that mean the tool did not run as it should; a handler's ToolFailure may not use them. */
export const SYSTEM_FAILURES = new Set([
  "worker_error",
  "invalid_output",
  "invalid_content",
  "invalid_question",
  "unknown_tool",
  "deadline_exceeded",
]);

const TOKEN = /^[A-Za-z0-9_-]+$/;
const TOOL_SUBJECT = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const WORKFLOW_ID = /^[A-Za-z0-9_-]+$/;
const QUESTION_ID = /^[A-Za-z0-9_.-]+$/;
const DAY = 86_400;

export class ContractError extends Error {
  name = "ContractError";
}

/** Every subject of the contract under one prefix (default `mcpgw`). */
export class Subjects {
  constructor(prefix = "mcpgw") {
    if (!prefix.split(".").every((part) => TOKEN.test(part))) {
      throw new Error(`subject prefix ${JSON.stringify(prefix)} must be dot-separated tokens of [A-Za-z0-9_-]`);
    }
    this.prefix = prefix;
  }
  get commandStream() {
    return this.prefix.replaceAll(".", "_").toUpperCase() + "_COMMANDS";
  }
  get eventStream() {
    return this.prefix.replaceAll(".", "_").toUpperCase() + "_EVENTS";
  }
  get allCommands() {
    return `${this.prefix}.cmd.>`;
  }
  get allEvents() {
    return `${this.prefix}.evt.>`;
  }
  get allCancels() {
    return `${this.prefix}.ctl.cancel.*`;
  }
  command(toolSubject) {
    return `${this.prefix}.cmd.${toolSubject}`;
  }
  /** Where a workflow's events go: its tool's subject, then its id (NATS can hold a worker user to its tools). */
  event(toolSubject, workflowId) {
    return `${this.prefix}.evt.${toolSubject}.${workflowId}`;
  }
  cancel(workflowId) {
    return `${this.prefix}.ctl.cancel.${workflowId}`;
  }
  /** Where the answers to a workflow's questions come: its tool's subject, then its id. */
  answer(toolSubject, workflowId) {
    return `${this.prefix}.ctl.input.${toolSubject}.${workflowId}`;
  }
  resource(templateSubject) {
    return `${this.prefix}.res.${templateSubject}`;
  }
}

/**
 * The two streams, exactly as `stream_configs` in _streams.py writes them (nats-py's StreamConfig defaults
 * included, so a stream this worker creates is the one a Python worker or the gateway would have created).
 */
export function streamConfigs(subjects, { duplicateWindow = 3_600, maxAge = 7 * DAY } = {}) {
  return [
    [subjects.commandStream, subjects.allCommands, `mcp-gateway commands to workers (contract v${CONTRACT_VERSION})`],
    [subjects.eventStream, subjects.allEvents, `worker events back to mcp-gateway (contract v${CONTRACT_VERSION})`],
  ].map(([name, subject, description]) => ({
    name,
    description,
    subjects: [subject],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(maxAge * 1000),
    duplicate_window: nanos(duplicateWindow * 1000),
    discard_new_per_subject: false,
    max_msgs_per_subject: -1,
    max_msg_size: -1,
    no_ack: false,
    sealed: false,
    deny_delete: false,
    deny_purge: false,
    allow_rollup_hdrs: false,
  }));
}

/** The durable pull consumer of one tool subject, as the Python SDK's Worker._subscribe configures it. */
export function consumerConfig(subjects, toolSubject, { ackWait = 30, maxDeliver = 5, maxConcurrency = 16 } = {}) {
  const durable = durableName(toolSubject);
  return {
    name: durable,
    durable_name: durable,
    filter_subject: subjects.command(toolSubject),
    deliver_policy: "all",
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(ackWait * 1000),
    max_deliver: maxDeliver,
    replay_policy: "instant",
    max_ack_pending: Math.max(maxConcurrency * 4, 64),
  };
}

/** Shared by every instance of every worker serving the subject, whatever its language. */
export function durableName(toolSubject) {
  return "mcpgw-worker-" + toolSubject.replaceAll(".", "_");
}

// --- strict decoding -----------------------------------------------------------------------------------

const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);

function parseBody(data, what) {
  let raw;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch (err) {
    throw new ContractError(`invalid ${what}: body is not JSON (${err.message})`);
  }
  if (!isObject(raw)) {
    throw new ContractError(`invalid ${what}: body must be a JSON object, got ${Array.isArray(raw) ? "list" : typeof raw}`);
  }
  return raw;
}

/** Checks `raw` against `fields` ({name: [required, check]}) and refuses unknown keys; returns the problems. */
function check(raw, fields, path = "") {
  const problems = [];
  for (const key of Object.keys(raw)) {
    if (!(key in fields)) problems.push(`${path}${key}: extra inputs are not permitted`);
  }
  for (const [key, [required, test]] of Object.entries(fields)) {
    if (!(key in raw)) {
      if (required) problems.push(`${path}${key}: field required`);
      continue;
    }
    const problem = test(raw[key], `${path}${key}.`);
    if (problem) problems.push(...(Array.isArray(problem) ? problem : [`${path}${key}: ${problem}`]));
  }
  return problems;
}

const literal = (expected) => (v) => (v === expected ? null : `input should be ${JSON.stringify(expected)}`);
const oneOf = (...options) => (v) =>
  options.includes(v) ? null : `input should be ${options.map((o) => JSON.stringify(o)).join(", ")}`;
const string = (v) => (typeof v === "string" ? null : "input should be a valid string");
const nullable = (test) => (v, path) => (v === null ? null : test(v, path));
const object = (v) => (isObject(v) ? null : "input should be a valid dictionary");
const workflowId = (v) =>
  typeof v !== "string"
    ? "input should be a valid string"
    : v.length < 1 || v.length > 64 || !WORKFLOW_ID.test(v)
      ? `string should be 1 to 64 characters of [A-Za-z0-9_-]`
      : null;
const toolSubject = (v) =>
  typeof v === "string" && v.length <= 512 && TOOL_SUBJECT.test(v) ? null : "input should be a tool subject (dot-separated tokens)";
const integerAtLeast = (min) => (v) =>
  Number.isInteger(v) ? (v >= min ? null : `input should be greater than or equal to ${min}`) : "input should be a valid integer";
const datetime = (v) =>
  (typeof v === "string" || typeof v === "number") && !Number.isNaN(new Date(typeof v === "number" ? v * 1000 : v).getTime())
    ? null
    : "input should be a valid datetime";
const ABILITIES = ["elicitation", "sampling", "roots"];
const caller = (v, path) => {
  if (!isObject(v)) return "input should be a valid dictionary";
  const problems = check(
    v,
    {
      subject: [false, string],
      request_id: [false, nullable(string)],
      can_answer: [
        false,
        nullable((list) =>
          Array.isArray(list) && list.every((item) => ABILITIES.includes(item))
            ? null
            : `input should be a list of ${ABILITIES.join(", ")}`,
        ),
      ],
    },
    path,
  );
  return problems.length ? problems : null;
};

function decode(data, what, fields, defaults) {
  const raw = parseBody(data, what);
  const problems = check(raw, fields);
  if (problems.length) throw new ContractError(`invalid ${what}: ${problems.join("; ")}`);
  return { ...defaults, ...raw };
}

/** A command (what the gateway asks): {v, kind, workflow_id, tool, subject, tool_version, arguments, caller,
 * deadline, attempt, reply_subject}. `deadline` comes back as a Date. A version 1 command (from a gateway before
 * contract 2) has no `subject`: the worker takes it from the consumer the command came through. */
export function decodeCommand(data) {
  const command = decode(
    data,
    "command",
    {
      v: [false, oneOf(1, 2)],
      kind: [false, literal("execute")],
      workflow_id: [true, workflowId],
      tool: [true, string],
      subject: [false, nullable(toolSubject)],
      tool_version: [true, string],
      arguments: [true, object],
      caller: [true, caller],
      deadline: [true, datetime],
      attempt: [false, integerAtLeast(1)],
      reply_subject: [true, string],
      retry: [false, object],
    },
    { v: 2, kind: "execute", attempt: 1, subject: null },
  );
  if (command.v >= 2 && command.subject == null) {
    throw new ContractError("invalid command: subject: a version 2 command needs 'subject' (the tool's subject)");
  }
  command.caller = { subject: "anonymous", request_id: null, can_answer: null, ...command.caller };
  const d = command.deadline;
  command.deadline = new Date(typeof d === "number" ? d * 1000 : d);
  return command;
}

/** A cancel (core NATS): {v, workflow_id, reason: cancelled | timed_out}. */
export function decodeCancel(data) {
  return decode(
    data,
    "cancel",
    {
      v: [false, literal(1)],
      workflow_id: [true, workflowId],
      reason: [true, oneOf("cancelled", "timed_out")],
      attempt: [false, integerAtLeast(1)],
    },
    { v: 1, attempt: null },
  );
}

/** An input answer (core NATS): {v, workflow_id, request_id, action: accept | decline | cancel, content?}. */
export function decodeAnswer(data) {
  return decode(
    data,
    "input answer",
    {
      v: [false, literal(1)],
      workflow_id: [true, workflowId],
      request_id: [true, string],
      action: [true, oneOf("accept", "decline", "cancel")],
      content: [false, nullable(object)],
    },
    { v: 1, content: null },
  );
}

// --- what a worker sends -------------------------------------------------------------------------------

/** A question, checked as the Python InputRequest model checks it. */
export function inputRequest({ id, kind, message, schema, sampling }) {
  if (typeof id !== "string" || id.length < 1 || id.length > 64 || !QUESTION_ID.test(id)) {
    throw new Error(`a question id is 1 to 64 characters of [A-Za-z0-9_.-], got ${JSON.stringify(id)}`);
  }
  if (id === "approval") throw new Error("the question id 'approval' is the gateway's (for approvals); use another");
  if (!["confirm", "form", "sampling", "roots"].includes(kind)) throw new Error(`unknown question kind ${kind}`);
  if (typeof message !== "string" || message.length < 1 || message.length > 4000) {
    throw new Error("a question's message is 1 to 4000 characters");
  }
  if (schema != null && (!isObject(schema) || schema.type !== "object")) {
    throw new Error('a question\'s \'schema\' must be a JSON object schema ({"type": "object", ...})');
  }
  if (kind === "sampling" && !(Array.isArray(sampling?.messages) && Number.isInteger(sampling?.maxTokens))) {
    throw new Error("a 'sampling' question needs 'sampling' with 'messages' (a list) and 'maxTokens'");
  }
  return withoutNulls({ id, kind, message, schema, sampling });
}

/** An error ({code, message, retryable, details?}), as ErrorInfo. */
export function errorInfo(code, message, { retryable = false, details } = {}) {
  if (typeof code !== "string" || code.length < 1 || code.length > 100) throw new Error("an error code is 1 to 100 characters");
  return withoutNulls({ code, message: String(message), retryable, details });
}

/** The wire form of an event: the contract's fields, no null ones (as `encode` writes them). */
export function encodeEvent({ workflowId, attempt, seq, kind, at = new Date(), ...fields }) {
  const body = withoutNulls({ v: EVENT_VERSION, workflow_id: workflowId, attempt, seq, kind, at: at.toISOString(), ...fields });
  return new TextEncoder().encode(JSON.stringify(body));
}

export function eventKey(workflowId, attempt, seq) {
  return `${workflowId}.${attempt}.${seq}`;
}

function withoutNulls(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== null && value !== undefined));
}
