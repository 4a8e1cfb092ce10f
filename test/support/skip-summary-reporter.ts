/**
 * A node:test reporter, stacked after spec by `npm test`: at the end of the
 * run, one line per reason something was skipped, with how many tests and in
 * which files — first what was skipped for want of a service (PostgreSQL,
 * Redis, redis-server; see services.ts), then any other skip — or a line
 * saying nothing was skipped for want of a service.
 */
import { basename } from "node:path";
import { serviceSkipPrefix } from "./services.js";

interface TestEvent {
  readonly type: string;
  readonly data: { readonly skip?: string | boolean; readonly file?: string; readonly name?: string };
}

export default async function* skipSummary(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const byReason = new Map<string, { tests: number; files: Set<string> }>();
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const skip = event.data.skip;
    if (skip === undefined || skip === false) continue;
    const reason = typeof skip === "string" ? skip : "skipped";
    const entry = byReason.get(reason) ?? { tests: 0, files: new Set<string>() };
    entry.tests++;
    if (event.data.file) entry.files.add(basename(event.data.file).replace(/(\.test)?\.js$/, ""));
    byReason.set(reason, entry);
  }
  const line = (reason: string) => {
    const { tests, files } = byReason.get(reason)!;
    return `    ${reason.startsWith(serviceSkipPrefix) ? reason.slice(serviceSkipPrefix.length) : reason} — ${tests} ${tests === 1 ? "test or suite" : "tests or suites"} in ${[...files].sort().join(", ")}\n`;
  };
  const service = [...byReason.keys()].filter((r) => r.startsWith(serviceSkipPrefix)).sort();
  const other = [...byReason.keys()].filter((r) => !r.startsWith(serviceSkipPrefix)).sort();
  yield "\nSkip summary:\n";
  if (service.length === 0) yield "  nothing skipped for want of a service (PostgreSQL, Redis, redis-server)\n";
  else yield `  NOT RUN for want of a service (ADMISSION_REQUIRE_SERVICES=1 makes this a failure):\n${service.map(line).join("")}`;
  if (other.length > 0) yield `  skipped whatever the services (not applicable there):\n${other.map(line).join("")}`;
}
