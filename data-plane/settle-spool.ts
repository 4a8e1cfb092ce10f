import { existsSync, mkdirSync } from "node:fs";
import { open, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { toJson, fromJson, type JsonValue } from "@bufbuild/protobuf";
import type { SettleRequest } from "../gen/admission/v1/admission_pb.js";
import { SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";

/**
 * Settles the control plane did not acknowledge, fsync'd to disk as JSON lines
 * and replayed later; Settle is idempotent per reservation, so a replay of one
 * that did arrive changes nothing.
 */
export class SettleSpool {
  private readonly active: string;
  private readonly replaying: string;
  private appending: Promise<void> = Promise.resolve();

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.active = join(dir, "settles.jsonl");
    this.replaying = join(dir, "settles.replaying.jsonl");
  }

  append(req: SettleRequest): Promise<void> {
    const run = this.appending.then(async () => {
      const f = await open(this.active, "a");
      try {
        await f.appendFile(`${JSON.stringify(toJson(SettleRequestSchema, req))}\n`);
        await f.sync();
      } finally {
        await f.close();
      }
    });
    this.appending = run.catch(() => undefined);
    return run;
  }

  pending(): boolean {
    return existsSync(this.active) || existsSync(this.replaying);
  }

  /** Sends every spooled settle; stops (keeping the rest) at the first that fails. */
  async replay(send: (req: SettleRequest) => Promise<unknown>): Promise<number> {
    await this.appending;
    if (!existsSync(this.replaying)) {
      if (!existsSync(this.active)) return 0;
      await rename(this.active, this.replaying);
    }
    const lines = (await readFile(this.replaying, "utf8")).split("\n").filter(Boolean);
    let sent = 0;
    for (const line of lines) {
      let req: SettleRequest;
      try {
        req = fromJson(SettleRequestSchema, JSON.parse(line) as JsonValue);
      } catch {
        continue; // a torn line was never acknowledged to anyone
      }
      await send(req);
      sent++;
    }
    await rm(this.replaying);
    return sent;
  }
}
