import { existsSync } from "node:fs";
/** Why tests that run their own redis-server processes (a private instance, a cluster) are skipped, or false. */
export function redisClusterUnavailable() {
    if (existsSync("/usr/bin/redis-server") && existsSync("/usr/bin/redis-cli"))
        return false;
    if (process.env.ADMISSION_REQUIRE_SERVICES === "1")
        throw new Error("redis-server and redis-cli are required (apt-get install redis-server redis-tools)");
    return "redis-server/redis-cli not installed: apt-get install redis-server redis-tools to run the Redis Cluster test";
}
//# sourceMappingURL=redis-cluster.js.map