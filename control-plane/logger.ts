import pino, { type Logger } from "pino";

/** JSON logs; credentials, secrets and tokens are redacted wherever they appear in a logged object. */
export function createLogger(options: { level: string; service: string }): Logger {
  return pino({
    level: options.level,
    base: { service: options.service },
    redact: {
      paths: ["credential", "*.credential", "secret", "*.secret", "authorization", "*.authorization", "headers.authorization", "adminToken", "*.adminToken", "apiKey", "*.apiKey"],
      censor: "[redacted]",
    },
  });
}
