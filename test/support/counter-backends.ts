import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import type { ControlPlaneConfig } from "../../control-plane/config.js";
import { deleteKeysWithPrefix } from "./redis-keys.js";
import { missingService } from "./services.js";

/** Where a test control plane keeps its counters: one of these per run of a suite that must hold on every store. */
export interface CounterBackend {
  readonly name: "memory" | "redis";
  /** Why it is skipped, or false. */
  readonly skip: string | false;
  /** The control plane's counter settings, under a prefix of the test's own. */
  config(): Partial<ControlPlaneConfig>;
  /** Removes what the test left in the store. */
  cleanUp(): Promise<void>;
}

/** Counters in memory, and on the shared Redis (REDIS_URL) under a random prefix of this test. */
export function counterBackends(label: string): CounterBackend[] {
  const prefix = `${label}-${randomBytes(4).toString("hex")}`;
  return [
    { name: "memory", skip: false, config: () => ({}), cleanUp: async () => undefined },
    {
      name: "redis",
      skip: missingService("Redis", "REDIS_URL"),
      config: () => ({ redisUrl: process.env.REDIS_URL!, redisKeyPrefix: prefix }),
      async cleanUp() {
        const redis = new Redis(process.env.REDIS_URL!);
        try {
          await deleteKeysWithPrefix(redis, prefix);
        } finally {
          await redis.quit();
        }
      },
    },
  ];
}
