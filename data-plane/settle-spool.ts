import { existsSync, mkdirSync } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { clone, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import type { SettleRequest } from "../gen/admission/v1/admission_pb.js";
import { SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { appendLinesDurably, countSpoolLines, dropTornTail, quarantineLines, readSpoolLines, type QuarantinedLines } from "../control-plane/store/spool-file.js";

/** What a replayed settle came to: delivered (or a duplicate), retry later, or never deliverable. */
export type ReplayResult = "delivered" | "retry" | "drop";

export interface ReplayReport {
  readonly delivered: number;
  /** Refused by the control plane for good (logged by the caller). */
  readonly dropped: number;
  /** Lines that are not a settle, moved to the quarantine file. */
  readonly quarantined: number;
  /** Left in the spool for the next replay. */
  readonly remaining: number;
}

export interface SettleSpoolOptions {
  /** Hears of lines a replay could not read: moved to the quarantine file, never deleted (count them, log them). */
  readonly onQuarantine?: (quarantined: QuarantinedLines) => void;
}

/**
 * Settles the control plane did not acknowledge, as JSON lines appended and
 * fsync'd before `append` resolves (appends arriving together share one
 * fsync), replayed later. Settle is idempotent per reservation, so replaying
 * one that did arrive, or replaying twice after a crash, changes nothing.
 * Credentials are never written: the signed reservation id is enough.
 *
 * Files: `settles.jsonl` takes appends; a replay renames it to
 * `settles.replaying.jsonl`, sends its lines, and rewrites (atomically) what
 * is left — so a crash at any point loses nothing. A torn last line (a crash
 * mid-append: never acknowledged) is dropped; any other line that is not a
 * settle goes to `settles.quarantine.jsonl`, never deleted.
 */
export class SettleSpool {
  private readonly active: string;
  private readonly replaying: string;
  readonly quarantineFile: string;
  private queue: Array<{ line: string; resolve: () => void; reject: (err: Error) => void }> = [];
  private flushing: Promise<void> | undefined;
  private replayRun: Promise<ReplayReport> | undefined;
  private count: number;

  constructor(dir: string, private readonly options: SettleSpoolOptions = {}) {
    mkdirSync(dir, { recursive: true });
    this.active = join(dir, "settles.jsonl");
    this.replaying = join(dir, "settles.replaying.jsonl");
    this.quarantineFile = join(dir, "settles.quarantine.jsonl");
    // Before the first append: a settle must not be glued to the torn remains of one a crash interrupted.
    dropTornTail(this.active);
    this.count = countSpoolLines(this.active) + countSpoolLines(this.replaying);
  }

  /** Resolves once the settle is durable on disk. */
  append(req: SettleRequest): Promise<void> {
    const stored = clone(SettleRequestSchema, req);
    stored.credential = "";
    const line = `${JSON.stringify(toJson(SettleRequestSchema, stored))}\n`;
    return new Promise((resolve, reject) => {
      this.queue.push({ line, resolve, reject });
      this.flushing ??= this.flush();
    });
  }

  /** Whether settles wait in the spool. */
  pending(): boolean {
    return this.count > 0;
  }

  /** How many settles wait in the spool. */
  size(): number {
    return this.count;
  }

  /**
   * Sends spooled settles in order. Stops at the first that must be retried
   * (the control plane is likely unreachable again) and keeps it and the rest;
   * drops the ones `send` says can never be delivered.
   */
  replay(send: (req: SettleRequest) => Promise<ReplayResult>): Promise<ReplayReport> {
    this.replayRun ??= this.replayOnce(send).finally(() => (this.replayRun = undefined));
    return this.replayRun;
  }

  /** Waits for appends in progress. */
  async idle(): Promise<void> {
    while (this.flushing) await this.flushing;
    await this.replayRun?.catch(() => undefined);
  }

  private async flush(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      try {
        await appendLinesDurably(this.active, batch.map((b) => b.line).join(""));
        this.count += batch.length;
        for (const b of batch) b.resolve();
      } catch (err) {
        for (const b of batch) b.reject(err as Error);
      }
    }
    this.flushing = undefined;
  }

  private async replayOnce(send: (req: SettleRequest) => Promise<ReplayResult>): Promise<ReplayReport> {
    let delivered = 0;
    let dropped = 0;
    let quarantined = 0;
    for (;;) {
      // Appends and the rename must not interleave.
      while (this.flushing) await this.flushing;
      if (!existsSync(this.replaying)) {
        if (!existsSync(this.active)) break;
        await rename(this.active, this.replaying);
      }
      const file = await this.replayFile(send);
      delivered += file.delivered;
      dropped += file.dropped;
      quarantined += file.quarantined;
      this.count = Math.max(0, this.count - file.delivered - file.dropped - file.quarantined);
      if (file.kept > 0) break;
    }
    return { delivered, dropped, quarantined, remaining: this.count };
  }

  /** Sends the replaying file's lines; rewrites it with what is left, or removes it. */
  private async replayFile(send: (req: SettleRequest) => Promise<ReplayResult>): Promise<{ delivered: number; dropped: number; quarantined: number; kept: number }> {
    // A torn last line was never acknowledged as spooled (its fsync did not complete): it is left out.
    const { lines } = await readSpoolLines(this.replaying);
    const unreadable: Array<{ text: string; number: number }> = [];
    let delivered = 0;
    let dropped = 0;
    let i = 0;
    for (; i < lines.length; i++) {
      let req: SettleRequest;
      try {
        req = fromJson(SettleRequestSchema, JSON.parse(lines[i]!.text) as JsonValue);
      } catch {
        unreadable.push(lines[i]!);
        continue;
      }
      const result = await send(req).catch((): ReplayResult => "retry");
      if (result === "retry") break;
      if (result === "delivered") delivered++;
      else dropped++;
    }
    if (unreadable.length > 0) {
      await quarantineLines(this.quarantineFile, unreadable.map((l) => l.text));
      this.options.onQuarantine?.({ from: this.replaying, quarantineFile: this.quarantineFile, lineNumbers: unreadable.map((l) => l.number) });
    }
    const rest = lines.slice(i).map((l) => l.text);
    if (rest.length === 0) {
      await rm(this.replaying, { force: true });
    } else {
      const tmp = `${this.replaying}.tmp`;
      const f = await open(tmp, "w", 0o600);
      try {
        await f.writeFile(`${rest.join("\n")}\n`);
        await f.sync();
      } finally {
        await f.close();
      }
      await rename(tmp, this.replaying);
    }
    return { delivered, dropped, quarantined: unreadable.length, kept: rest.length };
  }
}
