import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import type { ControlPlaneConfig } from "../../control-plane/config.js";
import { deleteKeysWithPrefix } from "./redis-keys.js";
import { missingService } from "./services.js";

/** Where a test control plane keeps its counters: its config, and how to remove what the test left there. */
export interface CounterPlace {
  readonly config: Partial<ControlPlaneConfig>;
  remove(): Promise<void>;
}

export interface CounterBackend {
  readonly name: "memory" | "redis";
  /** Why the backend is skipped, or false. */
  readonly skip: string | false;
  /** A fresh place: nothing for memory, a key prefix of its own on the shared Redis. */
  create(label: string): CounterPlace;
}

/** Counters in memory, and on REDIS_URL's Redis (skipped without it, unless services are required). */
export function counterBackends(): CounterBackend[] {
  return [
    { name: "memory", skip: false, create: () => ({ config: {}, remove: async () => undefined }) },
    {
      name: "redis",
      skip: missingService("Redis", "REDIS_URL"),
      create: (label) => {
        const prefix = `adm${label}-${randomBytes(4).toString("hex")}`;
        return {
          config: { redisUrl: process.env.REDIS_URL!, redisKeyPrefix: prefix },
          async remove() {
            const redis = new Redis(process.env.REDIS_URL!);
            try {
              await deleteKeysWithPrefix(redis, prefix);
            } finally {
              await redis.quit();
            }
          },
        };
      },
    },
  ];
}
