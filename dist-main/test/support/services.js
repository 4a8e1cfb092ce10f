/**
 * Reachability of the machine's PostgreSQL and Redis for tests. Outside CI a
 * missing service skips the tests that need it, with a message saying why;
 * with ADMISSION_REQUIRE_SERVICES=1 (set by .ci/run) it fails them instead.
 */
export const requireServices = process.env.ADMISSION_REQUIRE_SERVICES === "1";
export function missingService(name, envVar) {
    if (process.env[envVar])
        return false;
    if (requireServices)
        throw new Error(`${envVar} is not set but ADMISSION_REQUIRE_SERVICES=1: ${name} is required`);
    return `${name} not configured: set ${envVar} to run this test`;
}
//# sourceMappingURL=services.js.map