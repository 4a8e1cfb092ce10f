import pino, { type DestinationStream, type Logger } from "pino";

/**
 * JSON logs of both planes (pino). Credentials, secrets, tokens and provider
 * keys are never logged on purpose; these paths are redacted in case one ever
 * reaches a logged object.
 *
 * Lines go to stdout through an asynchronous destination: a write in flight
 * takes the lines logged meanwhile with it, so a busy data plane (a line per
 * request) makes one write per batch instead of a blocking syscall per line.
 * Whatever is buffered is flushed synchronously when the process exits, and on
 * a fatal log; a SIGKILL can lose the last lines, never usage (that is in the ledger).
 */
export function createLogger(options: { level: string; service: string; destination?: DestinationStream }): Logger {
  return pino({
    level: options.level,
    base: { service: options.service },
    redact: {
      paths: [
        "credential", "*.credential", "secret", "*.secret", "authorization", "*.authorization", "headers.authorization",
        "adminToken", "*.adminToken", "apiKey", "*.apiKey", "providers[*].apiKey",
      ],
      censor: "[redacted]",
    },
  }, options.destination ?? pino.destination({ dest: 1, sync: false }));
}
