/** Deletes every key under a test's prefix (tests never touch keys they did not create). */
export async function deleteKeysWithPrefix(redis, prefix) {
    let cursor = "0";
    do {
        const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
        cursor = next;
        if (keys.length)
            await redis.del(...keys);
    } while (cursor !== "0");
}
//# sourceMappingURL=redis-keys.js.map