import { trace } from "@opentelemetry/api";
import pino, { type DestinationStream, type Logger } from "pino";

/**
 * JSON logs of both planes (pino). Credentials, secrets, tokens and provider
 * keys are never logged on purpose; these paths are redacted in case one ever
 * reaches a logged object.
 *
 * Lines go to stdout buffered, written asynchronously 4 KiB at a time and at
 * least every second: the data plane logs a line per request, and a write per
 * line cost it 20-60 µs (measured at 1,000 lines/s; 12-30 µs buffered). What is
 * buffered is flushed synchronously when the process exits and on a fatal log;
 * a SIGKILL can lose up to a second of lines, never usage (that is in the
 * ledger). A reader that stops reading costs at most 16 MiB of buffered lines;
 * past that, lines are dropped rather than memory exhausted.
 *
 * A line logged while a trace span is active carries its `trace_id` and `span_id`.
 */
export function createLogger(options: { level: string; service: string; destination?: DestinationStream }): Logger {
  return pino({
    level: options.level,
    base: { service: options.service },
    mixin: traceIds,
    redact: {
      paths: [
        "credential", "*.credential", "secret", "*.secret", "authorization", "*.authorization", "headers.authorization",
        "adminToken", "*.adminToken", "apiKey", "*.apiKey", "providers[*].apiKey",
      ],
      censor: "[redacted]",
    },
  }, options.destination ?? stdout());
}

/** The active span's ids (none when tracing is off: no context manager, no span). A new object each time: pino merges the line into it. */
function traceIds(): object {
  const span = trace.getActiveSpan();
  if (!span) return {};
  const { traceId, spanId } = span.spanContext();
  return { trace_id: traceId, span_id: spanId };
}

const flushEveryMs = 1_000;

let stdoutDestination: DestinationStream | undefined;

/**
 * The process's one buffered stdout: both planes in one process (`npm start`) share it, so
 * a line is never split by the other logger's write landing in the middle of a partial one.
 */
function stdout(): DestinationStream {
  if (stdoutDestination) return stdoutDestination;
  const stream = pino.destination({ dest: 1, sync: false, minLength: 4096, maxLength: 16 * 1024 * 1024 });
  setInterval(() => {
    try {
      stream.flush();
    } catch {
      // closed: the process is exiting, and the exit hook flushed it
    }
  }, flushEveryMs).unref();
  return (stdoutDestination = stream);
}
