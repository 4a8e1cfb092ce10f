import { fork, type ChildProcess } from "node:child_process";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { Webhook } from "standardwebhooks";

/** How the receiver answers. */
export interface ReceiverBehaviour {
  /** ok: 204; fail: 500 always; gone: 410; redirect: 302 to itself; hang: never answers. */
  readonly mode: "ok" | "fail" | "gone" | "redirect" | "hang";
  /** Answer 500 to the first n attempts of each webhook-id, then as `mode`. */
  readonly failFirst?: number;
  /** Hold each request this long before answering. */
  readonly delayMs?: number;
}

/** One request as the receiver saw it: verified with the standardwebhooks package (or why not). */
export interface ReceivedWebhook {
  readonly id: string;
  readonly verified: boolean;
  readonly error?: string;
  readonly body: any;
  /** Which attempt of this webhook-id it was (1 for the first). */
  readonly attempt: number;
  /** Requests of this webhook-id in flight at once when it arrived (1: alone). */
  readonly concurrent: number;
  readonly status: number;
}

export interface WebhookReceiver {
  readonly url: string;
  readonly received: ReceivedWebhook[];
  setBehaviour(behaviour: ReceiverBehaviour): Promise<void>;
  /** Resolves once `predicate` holds for what was received (checked on every arrival). */
  waitFor(predicate: (received: readonly ReceivedWebhook[]) => boolean, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const script = fileURLToPath(import.meta.url);

/** Starts the receiver as its own process, verifying every signature with `secret` (the standardwebhooks package, not our code). */
export async function startWebhookReceiver(secret: string, behaviour: ReceiverBehaviour = { mode: "ok" }, port = 0): Promise<WebhookReceiver> {
  const child: ChildProcess = fork(script, [], { env: { RECEIVER_SECRET: secret, RECEIVER_PORT: String(port), RECEIVER_BEHAVIOUR: JSON.stringify(behaviour) }, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const received: ReceivedWebhook[] = [];
  const waiters = new Set<() => void>();
  let acks: Array<() => void> = [];
  const url = await new Promise<string>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`webhook receiver exited with ${code}`)));
    child.on("message", (m: any) => {
      if (m.kind === "listening") resolve(`http://127.0.0.1:${m.port}/hook`);
      else if (m.kind === "received") {
        received.push(m.webhook);
        for (const w of waiters) w();
      } else if (m.kind === "ack") {
        const pending = acks;
        acks = [];
        for (const a of pending) a();
      }
    });
  });
  return {
    url,
    received,
    setBehaviour: (b) => new Promise((resolve) => {
      acks.push(resolve);
      child.send({ kind: "behaviour", behaviour: b });
    }),
    waitFor: (predicate, timeoutMs = 60_000) => new Promise((resolve, reject) => {
      const check = () => {
        if (!predicate(received)) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`webhook receiver: condition not met within ${timeoutMs} ms; received ${JSON.stringify(received.map((r) => ({ id: r.id, type: r.body?.type, attempt: r.attempt, status: r.status })))}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    }),
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    }),
  };
}

/** The receiver process. */
function runReceiver(): void {
  const verifier = new Webhook(process.env.RECEIVER_SECRET!);
  let behaviour = JSON.parse(process.env.RECEIVER_BEHAVIOUR!) as ReceiverBehaviour;
  const attempts = new Map<string, number>();
  const inFlight = new Map<string, number>();
  process.on("message", (m: any) => {
    if (m.kind === "behaviour") {
      behaviour = m.behaviour;
      process.send!({ kind: "ack" });
    }
  });
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const payload = Buffer.concat(chunks).toString("utf8");
      const id = String(req.headers["webhook-id"] ?? "");
      const attempt = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, attempt);
      const concurrent = (inFlight.get(id) ?? 0) + 1;
      inFlight.set(id, concurrent);
      let verified = false;
      let error: string | undefined;
      let body: unknown;
      try {
        body = verifier.verify(payload, req.headers as Record<string, string>);
        verified = true;
      } catch (err) {
        error = String(err);
        try {
          body = JSON.parse(payload);
        } catch {
          body = payload;
        }
      }
      const b = behaviour;
      const status = !verified ? 400 : b.failFirst && attempt <= b.failFirst ? 500 : { ok: 204, fail: 500, gone: 410, redirect: 302, hang: 0 }[b.mode];
      const answer = () => {
        inFlight.set(id, (inFlight.get(id) ?? 1) - 1);
        process.send!({ kind: "received", webhook: { id, verified, error, body, attempt, concurrent, status } });
        if (status === 0) return; // hang: never answer
        res.writeHead(status, status === 302 ? { location: "http://127.0.0.1:1/elsewhere" } : {});
        res.end(status === 500 ? "x".repeat(200_000) : "");
      };
      if (b.delayMs) setTimeout(answer, b.delayMs);
      else answer();
    });
  });
  server.listen(Number(process.env.RECEIVER_PORT ?? 0), "127.0.0.1", () => {
    const address = server.address();
    process.send!({ kind: "listening", port: typeof address === "object" && address ? address.port : 0 });
  });
}

if (process.argv[1] === script && process.send) runReceiver();
