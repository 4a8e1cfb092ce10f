import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { open, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { clone, fromJson, toJson } from "@bufbuild/protobuf";
import { SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
/**
 * Settles the control plane did not acknowledge, as JSON lines appended and
 * fsync'd before `append` resolves (appends arriving together share one
 * fsync), replayed later. Settle is idempotent per reservation, so replaying
 * one that did arrive, or replaying twice after a crash, changes nothing.
 * Credentials are never written: the signed reservation id is enough.
 *
 * Files: `settles.jsonl` takes appends; a replay renames it to
 * `settles.replaying.jsonl`, sends its lines, and rewrites (atomically) what
 * is left — so a crash at any point loses nothing.
 */
export class SettleSpool {
    active;
    replaying;
    queue = [];
    flushing;
    replayRun;
    count;
    constructor(dir) {
        mkdirSync(dir, { recursive: true });
        this.active = join(dir, "settles.jsonl");
        this.replaying = join(dir, "settles.replaying.jsonl");
        this.count = countLines(this.active) + countLines(this.replaying);
    }
    /** Resolves once the settle is durable on disk. */
    append(req) {
        const stored = clone(SettleRequestSchema, req);
        stored.credential = "";
        const line = `${JSON.stringify(toJson(SettleRequestSchema, stored))}\n`;
        return new Promise((resolve, reject) => {
            this.queue.push({ line, resolve, reject });
            this.flushing ??= this.flush();
        });
    }
    /** Whether settles wait in the spool. */
    pending() {
        return this.count > 0;
    }
    /** How many settles wait in the spool. */
    size() {
        return this.count;
    }
    /**
     * Sends spooled settles in order. Stops at the first that must be retried
     * (the control plane is likely unreachable again) and keeps it and the rest;
     * drops the ones `send` says can never be delivered.
     */
    replay(send) {
        this.replayRun ??= this.replayOnce(send).finally(() => (this.replayRun = undefined));
        return this.replayRun;
    }
    /** Waits for appends in progress. */
    async idle() {
        while (this.flushing)
            await this.flushing;
        await this.replayRun?.catch(() => undefined);
    }
    async flush() {
        while (this.queue.length > 0) {
            const batch = this.queue;
            this.queue = [];
            try {
                const f = await open(this.active, "a", 0o600);
                try {
                    await f.appendFile(batch.map((b) => b.line).join(""));
                    await f.sync();
                }
                finally {
                    await f.close();
                }
                this.count += batch.length;
                for (const b of batch)
                    b.resolve();
            }
            catch (err) {
                for (const b of batch)
                    b.reject(err);
            }
        }
        this.flushing = undefined;
    }
    async replayOnce(send) {
        let delivered = 0;
        let dropped = 0;
        for (;;) {
            // Appends and the rename must not interleave.
            while (this.flushing)
                await this.flushing;
            if (!existsSync(this.replaying)) {
                if (!existsSync(this.active))
                    break;
                await rename(this.active, this.replaying);
            }
            const file = await this.replayFile(send);
            delivered += file.delivered;
            dropped += file.dropped;
            this.count = Math.max(0, this.count - file.delivered - file.dropped);
            if (file.kept > 0)
                break;
        }
        return { delivered, dropped, remaining: this.count };
    }
    /** Sends the replaying file's lines; rewrites it with what is left, or removes it. */
    async replayFile(send) {
        const lines = (await readFile(this.replaying, "utf8")).split("\n").filter(Boolean);
        let delivered = 0;
        let dropped = 0;
        let i = 0;
        for (; i < lines.length; i++) {
            let req;
            try {
                req = fromJson(SettleRequestSchema, JSON.parse(lines[i]));
            }
            catch {
                dropped++; // a line torn by a crash mid-write was never acknowledged as spooled
                continue;
            }
            const result = await send(req).catch(() => "retry");
            if (result === "retry")
                break;
            if (result === "delivered")
                delivered++;
            else
                dropped++;
        }
        const rest = lines.slice(i);
        if (rest.length === 0) {
            await rm(this.replaying, { force: true });
        }
        else {
            const tmp = `${this.replaying}.tmp`;
            const f = await open(tmp, "w", 0o600);
            try {
                await f.writeFile(`${rest.join("\n")}\n`);
                await f.sync();
            }
            finally {
                await f.close();
            }
            await rename(tmp, this.replaying);
        }
        return { delivered, dropped, kept: rest.length };
    }
}
function countLines(path) {
    if (!existsSync(path))
        return 0;
    return readFileSync(path, "utf8").split("\n").filter(Boolean).length;
}
//# sourceMappingURL=settle-spool.js.map