import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type {
  AdmitRequest, AdmitResponse, GetEffectivePolicyResponse, RenewRequest, RenewResponse, SessionRequest, SessionResponse, SettleRequest, SettleResponse,
} from "../gen/admission/v1/admission_pb.js";
import { AdmissionService, GetEffectivePolicyRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { grpcServiceDefinition } from "../control-plane/grpc/service-definition.js";
import { Backoff } from "./backoff.js";
import { asControlPlaneError, ControlPlaneError } from "./control-plane-error.js";
import { SessionStream, StreamClosedError, type SessionCall } from "./session-stream.js";
import type { TraceCarrier } from "../control-plane/tracing.js";

export { ControlPlaneError } from "./control-plane-error.js";

/** TLS to the control plane, as PEM read (and checked) at start-up. */
export interface ControlPlaneTls {
  /** CAs the server's certificate must chain to; undefined: the system's roots. */
  readonly caPem?: string;
  /** mTLS: the client's certificate chain and private key. */
  readonly certChainPem?: string;
  readonly privateKeyPem?: string;
  /** The name the server's certificate must carry, when it is not the address's host (e.g. dialling an IP). */
  readonly serverName?: string;
}

export interface ControlPlaneClientOptions {
  /**
   * host:port of the control plane, or a gRPC target naming several replicas
   * (dns:///name:port, ipv4:a:port,b:port): calls go round-robin over the
   * reachable ones, and a Session stream cut by a replica going away reopens on another.
   */
  readonly address: string;
  /** TLS (the server verified, optionally a client certificate); plaintext when absent. */
  readonly tls?: ControlPlaneTls;
  /** Deadline of Admit and GetEffectivePolicy. */
  readonly timeoutMs?: number;
  /** Deadline of Settle and Renew. */
  readonly settleTimeoutMs?: number;
  /** Session stream reconnect backoff. */
  readonly reconnectMinMs?: number;
  readonly reconnectMaxMs?: number;
  /** Use unary calls only (no Session stream). */
  readonly unary?: boolean;
  readonly logger?: Logger;
  readonly random?: () => number;
}

type Method = "admit" | "settle" | "renew";
type LinkListener = (up: boolean) => void;

/**
 * The data plane's link to the control plane. One bidirectional `Session`
 * stream per connection carries every Admit/Settle/Renew, matched by
 * correlation id; it is reopened with backoff whenever it ends. Calls in
 * flight when it breaks fail at once and are retried once as unary calls
 * (Admit is idempotent on request_id, Settle on reservation_id); while no
 * stream is open, calls go unary.
 */
export class ControlPlaneClient {
  private readonly client: grpc.Client & Record<string, Function>;
  private stream: SessionStream | undefined;
  private readonly backoff: Backoff;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private channelState = grpc.connectivityState.IDLE;
  private up = false;
  private closed = false;
  private readonly listeners = new Set<LinkListener>();
  private readonly timeoutMs: number;
  private readonly settleTimeoutMs: number;

  constructor(private readonly options: ControlPlaneClientOptions) {
    const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(AdmissionService), "AdmissionService");
    const tls = options.tls;
    this.client = new Client(options.address, channelCredentials(tls), {
      ...(tls?.serverName ? { "grpc.ssl_target_name_override": tls.serverName, "grpc.default_authority": tls.serverName } : {}),
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.initial_reconnect_backoff_ms": options.reconnectMinMs ?? 100,
      "grpc.max_reconnect_backoff_ms": options.reconnectMaxMs ?? 5_000,
      // A target naming several replicas: every one connected, calls spread, no wait to fail over.
      ...(namesSeveral(options.address) ? { "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }) } : {}),
    }) as grpc.Client & Record<string, Function>;
    this.timeoutMs = options.timeoutMs ?? 2_000;
    this.settleTimeoutMs = options.settleTimeoutMs ?? 5_000;
    this.backoff = new Backoff({ minMs: options.reconnectMinMs ?? 100, maxMs: options.reconnectMaxMs ?? 5_000, random: options.random });
    this.watchChannel();
    if (!options.unary) this.openStream();
  }

  /** `trace`: the caller's span context, sent with the call (Session message fields, or unary metadata). */
  admit(req: AdmitRequest, trace?: TraceCarrier): Promise<AdmitResponse> {
    return this.call("admit", { case: "admit", value: req }, this.timeoutMs, trace) as Promise<AdmitResponse>;
  }

  settle(req: SettleRequest, trace?: TraceCarrier): Promise<SettleResponse> {
    return this.call("settle", { case: "settle", value: req }, this.settleTimeoutMs, trace) as Promise<SettleResponse>;
  }

  renew(req: RenewRequest, trace?: TraceCarrier): Promise<RenewResponse> {
    return this.call("renew", { case: "renew", value: req }, this.settleTimeoutMs, trace) as Promise<RenewResponse>;
  }

  /** What the credential may use (tasks, routes, limits): GetEffectivePolicy, unary. */
  effectivePolicy(credential: string, task = ""): Promise<GetEffectivePolicyResponse> {
    return this.unary("getEffectivePolicy", create(GetEffectivePolicyRequestSchema, { credential, task }), this.timeoutMs) as Promise<GetEffectivePolicyResponse>;
  }

  /** The link is up: the channel is connected (and, unless unary-only, a Session stream is open on it). */
  connected(): boolean {
    return this.up;
  }

  /** Called with true when the link comes up and false when it goes down. */
  onLinkChange(listener: LinkListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.stream?.cancel("client closed");
    this.client.close();
    this.setUp(false);
  }

  private async call(method: Method, call: SessionCall, timeoutMs: number, trace?: TraceCarrier): Promise<unknown> {
    if (this.closed) throw new ControlPlaneError(grpc.status.CANCELLED, "client closed");
    const stream = this.stream?.accepting ? this.stream : undefined;
    if (stream) {
      try {
        const result = await stream.request(call, timeoutMs, trace);
        if (result.case === "error") throw new ControlPlaneError(result.value.code, result.value.message);
        return result.value;
      } catch (err) {
        // The stream broke under the call: it may or may not have been applied; both calls are idempotent.
        if (!(err instanceof StreamClosedError) || this.closed) throw err;
      }
    }
    return this.unary(method, call.value, timeoutMs, trace);
  }

  private unary(method: string, req: unknown, timeoutMs: number, trace?: TraceCarrier): Promise<unknown> {
    const metadata = new grpc.Metadata();
    if (trace?.traceparent) metadata.set("traceparent", trace.traceparent);
    if (trace?.tracestate) metadata.set("tracestate", trace.tracestate);
    return new Promise((resolve, reject) => {
      this.client[method]!.call(this.client, req, metadata, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: unknown) =>
        err ? reject(asControlPlaneError(err)) : resolve(res),
      );
    });
  }

  private openStream(): void {
    if (this.closed || this.stream) return;
    const call = this.client.session() as grpc.ClientDuplexStream<SessionRequest, SessionResponse>;
    this.stream = new SessionStream(call, (stream, why) => this.streamClosed(stream, why));
    this.updateLink();
  }

  private streamClosed(stream: SessionStream, why: string): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    this.updateLink();
    if (this.closed) return;
    const delayMs = this.backoff.nextDelayMs();
    this.options.logger?.debug({ why, delayMs }, "session stream closed; reopening");
    this.reconnectTimer = setTimeout(() => this.openStream(), delayMs);
    this.reconnectTimer.unref();
  }

  /** Follows the channel's connectivity; a stream on a channel that left READY is drained and reopened. */
  private watchChannel(): void {
    if (this.closed) return;
    const channel = this.client.getChannel();
    let state: grpc.connectivityState;
    try {
      state = channel.getConnectivityState(false);
      channel.watchConnectivityState(state, Infinity, () => this.watchChannel());
    } catch {
      return; // shut down
    }
    const wasReady = this.channelState === grpc.connectivityState.READY;
    this.channelState = state;
    if (state === grpc.connectivityState.READY) this.backoff.reset();
    else if (wasReady) this.stream?.drain(); // e.g. GOAWAY from a control plane shutting down
    this.updateLink();
  }

  private updateLink(): void {
    const ready = this.channelState === grpc.connectivityState.READY;
    this.setUp(!this.closed && ready && (this.options.unary === true || this.stream?.accepting === true));
  }

  private setUp(up: boolean): void {
    if (this.up === up) return;
    this.up = up;
    this.options.logger?.info({ address: this.options.address }, up ? "control plane link up" : "control plane link down");
    for (const listener of this.listeners) listener(up);
  }
}

function channelCredentials(tls: ControlPlaneTls | undefined): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  const pem = (text: string | undefined) => (text === undefined ? null : Buffer.from(text));
  return grpc.credentials.createSsl(pem(tls.caPem), pem(tls.privateKeyPem), pem(tls.certChainPem));
}

/** A gRPC target that may resolve to several addresses (dns:, or an ipv4:/ipv6: list), rather than one host:port. */
function namesSeveral(address: string): boolean {
  return /^(dns|ipv4|ipv6):/.test(address);
}
