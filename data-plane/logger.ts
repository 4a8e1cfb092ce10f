import pino, { type Logger } from "pino";

/**
 * JSON logs, one line per request with its request id and tenant. Credentials
 * and provider keys are never logged on purpose; these paths are redacted in
 * case one ever reaches a logged object.
 */
export function createLogger(options: { level: string; service: string }): Logger {
  return pino({
    level: options.level,
    base: { service: options.service },
    redact: {
      paths: ["credential", "*.credential", "authorization", "*.authorization", "headers.authorization", "apiKey", "*.apiKey", "providers[*].apiKey"],
      censor: "[redacted]",
    },
  });
}
