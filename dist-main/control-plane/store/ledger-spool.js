import { existsSync, mkdirSync } from "node:fs";
import { open, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
/**
 * Ledger rows that could not reach the database, kept on local disk: appended
 * as JSON lines and fsync'd before the Settle is acknowledged, replayed later.
 * Replay renames the file first, so rows spooled meanwhile go to a fresh one.
 */
export class LedgerSpool {
    active;
    replaying;
    appending = Promise.resolve();
    constructor(dir) {
        mkdirSync(dir, { recursive: true });
        this.active = join(dir, "ledger-spool.jsonl");
        this.replaying = join(dir, "ledger-spool.replaying.jsonl");
    }
    /** Resolves once the rows are on disk (fsync). */
    append(rows) {
        const run = this.appending.then(async () => {
            const file = await open(this.active, "a");
            try {
                await file.appendFile(rows.map((r) => `${JSON.stringify(r)}\n`).join(""));
                await file.sync();
            }
            finally {
                await file.close();
            }
        });
        this.appending = run.catch(() => undefined);
        return run;
    }
    pending() {
        return existsSync(this.active) || existsSync(this.replaying);
    }
    /**
     * Hands every spooled row to `write` (which must be idempotent) and deletes
     * them once it resolved. A failed write keeps them for the next attempt.
     */
    async replay(write) {
        await this.appending;
        if (!existsSync(this.replaying)) {
            if (!existsSync(this.active))
                return 0;
            await rename(this.active, this.replaying);
        }
        const text = await readFile(this.replaying, "utf8");
        // A torn last line was never acknowledged (its fsync did not complete): skip it.
        const rows = text.split("\n").filter(Boolean).flatMap((line) => {
            try {
                return [JSON.parse(line)];
            }
            catch {
                return [];
            }
        });
        for (let i = 0; i < rows.length; i += 500)
            await write(rows.slice(i, i + 500));
        await rm(this.replaying);
        return rows.length;
    }
}
//# sourceMappingURL=ledger-spool.js.map