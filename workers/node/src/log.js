// JSON lines on stderr, with the keys the Python side's structlog writes (event, level, timestamp), so one
// log pipeline reads both. stdout stays unused.

const LEVELS = { debug: 10, info: 20, warning: 30, error: 40 };

export class Logger {
  constructor(level = "info", fields = {}, write = (line) => process.stderr.write(line + "\n")) {
    if (!(level in LEVELS)) throw new Error(`log level must be one of ${Object.keys(LEVELS).join(", ")}, got ${level}`);
    this.level = level;
    this.fields = fields;
    this.write = write;
  }

  /** A logger that adds `fields` to every line (workflow_id, tool, ...). */
  bind(fields) {
    return new Logger(this.level, { ...this.fields, ...fields }, this.write);
  }

  log(level, event, fields = {}) {
    if (LEVELS[level] < LEVELS[this.level]) return;
    const line = { ...this.fields, ...fields, event, level, timestamp: new Date().toISOString() };
    for (const [key, value] of Object.entries(line)) {
      if (value instanceof Error) line[key] = `${value.name}: ${value.message}`;
      else if (value === undefined) delete line[key];
    }
    this.write(JSON.stringify(line));
  }

  debug(event, fields) {
    this.log("debug", event, fields);
  }
  info(event, fields) {
    this.log("info", event, fields);
  }
  warning(event, fields) {
    this.log("warning", event, fields);
  }
  error(event, fields) {
    this.log("error", event, fields);
  }
}
