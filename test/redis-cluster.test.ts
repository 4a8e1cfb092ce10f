import { after, before, describe } from "node:test";
import { RedisCounterStore } from "../control-plane/redis-counter-store.js";
import { counterStoreContract } from "./counter-store-contract.js";
import { redisClusterUnavailable, startRedisCluster, type LocalRedisCluster } from "./support/redis-cluster.js";

const skip = redisClusterUnavailable();

describe("Redis Cluster (3 masters on loopback)", { skip }, () => {
  let cluster: LocalRedisCluster;
  before(async () => (cluster = await startRedisCluster()), { timeout: 60_000 });
  after(() => cluster?.stop());
  counterStoreContract("redis-cluster", () => RedisCounterStore.connect({ clusterNodes: cluster.nodes, keyPrefix: "admcluster" }));
});
