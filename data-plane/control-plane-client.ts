import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import type {
  AdmitRequest, AdmitResponse, GetEffectivePolicyResponse, RenewRequest, RenewResponse, SessionRequest, SessionResponse, SettleRequest, SettleResponse,
} from "../gen/admission/v1/admission_pb.js";
import { AdmissionService, GetEffectivePolicyRequestSchema, SessionRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { grpcServiceDefinition } from "../control-plane/grpc/service-definition.js";

/** A failed call: the gRPC status code and message (UNAVAILABLE when the link is down). */
export class ControlPlaneError extends Error {
  constructor(readonly code: grpc.status, message: string) {
    super(message);
    this.name = "ControlPlaneError";
  }
}

type Call = { admit: AdmitRequest } | { settle: SettleRequest } | { renew: RenewRequest };

interface Pending {
  readonly resolve: (result: SessionResponse["result"]) => void;
  readonly reject: (err: ControlPlaneError) => void;
  readonly timer: NodeJS.Timeout;
}

export interface ControlPlaneClientOptions {
  /** host:port of the control plane. */
  readonly address: string;
  /** Per-call deadline. */
  readonly timeoutMs?: number;
  /** Use unary calls instead of the Session stream. */
  readonly unary?: boolean;
}

/**
 * One bidirectional Session stream per control-plane connection carries every
 * Admit/Settle/Renew, matched by correlation id. When the stream breaks, calls
 * in flight fail with UNAVAILABLE and the next call opens a new stream (with
 * backoff); while no stream can be opened, calls go unary.
 */
export class ControlPlaneClient {
  private readonly client: grpc.Client & Record<string, Function>;
  private stream: grpc.ClientDuplexStream<SessionRequest, SessionResponse> | undefined;
  private readonly pending = new Map<bigint, Pending>();
  private nextId = 1n;
  private retryAtMs = 0;
  private backoffMs = 100;
  private closed = false;
  private readonly timeoutMs: number;

  constructor(private readonly options: ControlPlaneClientOptions) {
    const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(AdmissionService), "AdmissionService");
    this.client = new Client(options.address, grpc.credentials.createInsecure(), {
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2_000,
    }) as grpc.Client & Record<string, Function>;
    this.timeoutMs = options.timeoutMs ?? 2_000;
  }

  admit(req: AdmitRequest): Promise<AdmitResponse> {
    return this.call({ admit: req }, "admit") as Promise<AdmitResponse>;
  }

  settle(req: SettleRequest): Promise<SettleResponse> {
    return this.call({ settle: req }, "settle") as Promise<SettleResponse>;
  }

  renew(req: RenewRequest): Promise<RenewResponse> {
    return this.call({ renew: req }, "renew") as Promise<RenewResponse>;
  }

  /** What the credential may use (models per task, limits): GetEffectivePolicy, unary. */
  effectivePolicy(credential: string): Promise<GetEffectivePolicyResponse> {
    return this.unary("getEffectivePolicy", create(GetEffectivePolicyRequestSchema, { credential })) as Promise<GetEffectivePolicyResponse>;
  }

  /** Whether the gRPC channel to the control plane is connected. */
  connected(): boolean {
    return this.client.getChannel().getConnectivityState(true) === grpc.connectivityState.READY;
  }

  close(): void {
    this.closed = true;
    this.failPending(new ControlPlaneError(grpc.status.CANCELLED, "client closed"));
    this.stream?.end();
    this.client.close();
  }

  private async call(call: Call, method: "admit" | "settle" | "renew"): Promise<unknown> {
    if (this.closed) throw new ControlPlaneError(grpc.status.CANCELLED, "client closed");
    const stream = this.options.unary ? undefined : this.openStream();
    if (!stream) return this.unary(method, Object.values(call)[0]);
    const id = this.nextId++;
    const [name, value] = Object.entries(call)[0]!;
    const result = await new Promise<SessionResponse["result"]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ControlPlaneError(grpc.status.DEADLINE_EXCEEDED, `control plane did not answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      stream.write(create(SessionRequestSchema, { id, call: { case: name as "admit", value: value as AdmitRequest } }));
    });
    if (result.case === "error") throw new ControlPlaneError(result.value.code, result.value.message);
    return result.value;
  }

  private openStream(): grpc.ClientDuplexStream<SessionRequest, SessionResponse> | undefined {
    if (this.stream) return this.stream;
    if (Date.now() < this.retryAtMs) return undefined;
    const stream = this.client.session() as grpc.ClientDuplexStream<SessionRequest, SessionResponse>;
    stream.on("data", (msg: SessionResponse) => {
      this.backoffMs = 100;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      p.resolve(msg.result);
    });
    const broken = (err?: Error) => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.retryAtMs = Date.now() + this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, 5_000);
      this.failPending(new ControlPlaneError(grpc.status.UNAVAILABLE, `session stream closed${err ? `: ${err.message}` : ""}`));
    };
    stream.on("error", broken);
    stream.on("end", () => broken());
    this.stream = stream;
    return stream;
  }

  private failPending(err: ControlPlaneError): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    }
  }

  private unary(method: string, req: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.client[method]!.call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + this.timeoutMs }, (err: grpc.ServiceError | null, res: unknown) =>
        err ? reject(new ControlPlaneError(err.code, err.details || err.message)) : resolve(res),
      );
    });
  }
}
