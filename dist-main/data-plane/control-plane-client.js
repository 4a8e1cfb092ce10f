import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { AdmissionService, GetEffectivePolicyRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { grpcServiceDefinition } from "../control-plane/grpc/service-definition.js";
import { Backoff } from "./backoff.js";
import { asControlPlaneError, ControlPlaneError } from "./control-plane-error.js";
import { SessionStream, StreamClosedError } from "./session-stream.js";
export { ControlPlaneError } from "./control-plane-error.js";
/**
 * The data plane's link to the control plane. One bidirectional `Session`
 * stream per connection carries every Admit/Settle/Renew, matched by
 * correlation id; it is reopened with backoff whenever it ends. Calls in
 * flight when it breaks fail at once and are retried once as unary calls
 * (Admit is idempotent on request_id, Settle on reservation_id); while no
 * stream is open, calls go unary.
 */
export class ControlPlaneClient {
    options;
    client;
    stream;
    backoff;
    reconnectTimer;
    channelState = grpc.connectivityState.IDLE;
    up = false;
    closed = false;
    listeners = new Set();
    timeoutMs;
    settleTimeoutMs;
    constructor(options) {
        this.options = options;
        const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(AdmissionService), "AdmissionService");
        this.client = new Client(options.address, options.credentials ?? grpc.credentials.createInsecure(), {
            "grpc.keepalive_time_ms": 10_000,
            "grpc.keepalive_timeout_ms": 5_000,
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.initial_reconnect_backoff_ms": options.reconnectMinMs ?? 100,
            "grpc.max_reconnect_backoff_ms": options.reconnectMaxMs ?? 5_000,
            // A target naming several replicas: every one connected, calls spread, no wait to fail over.
            ...(namesSeveral(options.address) ? { "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }) } : {}),
        });
        this.timeoutMs = options.timeoutMs ?? 2_000;
        this.settleTimeoutMs = options.settleTimeoutMs ?? 5_000;
        this.backoff = new Backoff({ minMs: options.reconnectMinMs ?? 100, maxMs: options.reconnectMaxMs ?? 5_000, random: options.random });
        this.watchChannel();
        if (!options.unary)
            this.openStream();
    }
    admit(req) {
        return this.call("admit", { case: "admit", value: req }, this.timeoutMs);
    }
    settle(req) {
        return this.call("settle", { case: "settle", value: req }, this.settleTimeoutMs);
    }
    renew(req) {
        return this.call("renew", { case: "renew", value: req }, this.settleTimeoutMs);
    }
    /** What the credential may use (tasks, routes, limits): GetEffectivePolicy, unary. */
    effectivePolicy(credential, task = "") {
        return this.unary("getEffectivePolicy", create(GetEffectivePolicyRequestSchema, { credential, task }), this.timeoutMs);
    }
    /** The link is up: the channel is connected (and, unless unary-only, a Session stream is open on it). */
    connected() {
        return this.up;
    }
    /** Called with true when the link comes up and false when it goes down. */
    onLinkChange(listener) {
        this.listeners.add(listener);
        return () => this.listeners.delete(listener);
    }
    close() {
        if (this.closed)
            return;
        this.closed = true;
        clearTimeout(this.reconnectTimer);
        this.stream?.cancel("client closed");
        this.client.close();
        this.setUp(false);
    }
    async call(method, call, timeoutMs) {
        if (this.closed)
            throw new ControlPlaneError(grpc.status.CANCELLED, "client closed");
        const stream = this.stream?.accepting ? this.stream : undefined;
        if (stream) {
            try {
                const result = await stream.request(call, timeoutMs);
                if (result.case === "error")
                    throw new ControlPlaneError(result.value.code, result.value.message);
                return result.value;
            }
            catch (err) {
                // The stream broke under the call: it may or may not have been applied; both calls are idempotent.
                if (!(err instanceof StreamClosedError) || this.closed)
                    throw err;
            }
        }
        return this.unary(method, call.value, timeoutMs);
    }
    unary(method, req, timeoutMs) {
        return new Promise((resolve, reject) => {
            this.client[method].call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => err ? reject(asControlPlaneError(err)) : resolve(res));
        });
    }
    openStream() {
        if (this.closed || this.stream)
            return;
        const call = this.client.session();
        this.stream = new SessionStream(call, (stream, why) => this.streamClosed(stream, why));
        this.updateLink();
    }
    streamClosed(stream, why) {
        if (this.stream !== stream)
            return;
        this.stream = undefined;
        this.updateLink();
        if (this.closed)
            return;
        const delayMs = this.backoff.nextDelayMs();
        this.options.logger?.debug({ why, delayMs }, "session stream closed; reopening");
        this.reconnectTimer = setTimeout(() => this.openStream(), delayMs);
        this.reconnectTimer.unref();
    }
    /** Follows the channel's connectivity; a stream on a channel that left READY is drained and reopened. */
    watchChannel() {
        if (this.closed)
            return;
        const channel = this.client.getChannel();
        let state;
        try {
            state = channel.getConnectivityState(false);
            channel.watchConnectivityState(state, Infinity, () => this.watchChannel());
        }
        catch {
            return; // shut down
        }
        const wasReady = this.channelState === grpc.connectivityState.READY;
        this.channelState = state;
        if (state === grpc.connectivityState.READY)
            this.backoff.reset();
        else if (wasReady)
            this.stream?.drain(); // e.g. GOAWAY from a control plane shutting down
        this.updateLink();
    }
    updateLink() {
        const ready = this.channelState === grpc.connectivityState.READY;
        this.setUp(!this.closed && ready && (this.options.unary === true || this.stream?.accepting === true));
    }
    setUp(up) {
        if (this.up === up)
            return;
        this.up = up;
        this.options.logger?.info({ address: this.options.address }, up ? "control plane link up" : "control plane link down");
        for (const listener of this.listeners)
            listener(up);
    }
}
/** A gRPC target that may resolve to several addresses (dns:, or an ipv4:/ipv6: list), rather than one host:port. */
function namesSeveral(address) {
    return /^(dns|ipv4|ipv6):/.test(address);
}
//# sourceMappingURL=control-plane-client.js.map