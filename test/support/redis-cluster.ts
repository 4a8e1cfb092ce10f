import { missingPrograms } from "./services.js";

/** Why tests that run their own redis-server processes (a private instance, a cluster) are skipped, or false. */
export function redisClusterUnavailable(): string | false {
  return missingPrograms(["/usr/bin/redis-server", "/usr/bin/redis-cli"], "apt-get install redis-server redis-tools");
}
