import { existsSync } from "node:fs";

/**
 * Reachability of the machine's PostgreSQL and Redis (and the redis-server
 * program) for tests: the one place that decides a skip for want of a
 * service. Outside CI a missing service skips the tests that need it, with a
 * reason saying what to set; with ADMISSION_REQUIRE_SERVICES=1 (set by
 * .ci/run) it fails them instead. Every such reason starts with
 * `serviceSkipPrefix`, so the end of `npm test` can list them
 * (skip-summary-reporter.ts).
 */
const requireServices = process.env.ADMISSION_REQUIRE_SERVICES === "1";

export const serviceSkipPrefix = "needs ";

/** Why a test needing the service `name` (configured by `envVar`) is skipped, or false. */
export function missingService(name: string, envVar: string): string | false {
  if (process.env[envVar]) return false;
  if (requireServices) throw new Error(`${envVar} is not set but ADMISSION_REQUIRE_SERVICES=1: ${name} is required`);
  return `${serviceSkipPrefix}${name}: set ${envVar} to run it`;
}

/** Why a test running its own servers from these programs is skipped, or false. */
export function missingPrograms(paths: readonly string[], install: string): string | false {
  const missing = paths.filter((p) => !existsSync(p));
  if (missing.length === 0) return false;
  if (requireServices) throw new Error(`${missing.join(", ")} required (${install})`);
  return `${serviceSkipPrefix}${missing.join(" and ")}: ${install} to run it`;
}
