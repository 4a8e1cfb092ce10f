import pino from "pino";
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
 */
export function createLogger(options) {
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
    }, options.destination ?? stdout());
}
const flushEveryMs = 1_000;
let stdoutDestination;
/**
 * The process's one buffered stdout: both planes in one process (`npm start`) share it, so
 * a line is never split by the other logger's write landing in the middle of a partial one.
 */
function stdout() {
    if (stdoutDestination)
        return stdoutDestination;
    const stream = pino.destination({ dest: 1, sync: false, minLength: 4096, maxLength: 16 * 1024 * 1024 });
    setInterval(() => {
        try {
            stream.flush();
        }
        catch {
            // closed: the process is exiting, and the exit hook flushed it
        }
    }, flushEveryMs).unref();
    return (stdoutDestination = stream);
}
//# sourceMappingURL=logger.js.map