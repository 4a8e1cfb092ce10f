import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { HealthCheckRequest, HealthCheckResponse, HealthListResponse } from "../../gen/grpc/health/v1/health_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus, HealthCheckResponseSchema, HealthListResponseSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { grpcServiceDefinition } from "./service-definition.js";
import { statusMessage } from "../rpc-error.js";

export { ServingStatus };

/** The most services List answers with, as the protocol specifies. */
const maxListedServices = 100;

interface Watcher {
  readonly service: string;
  readonly call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>;
  lastSent: ServingStatus;
}

/**
 * grpc.health.v1.Health: Check, List and Watch over a status per service
 * name, "" being the whole server. Kubernetes gRPC probes, Envoy and load
 * balancers read it.
 */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<Watcher>();
  private shuttingDown = false;

  /** The server ("") and each named service start SERVING. */
  constructor(services: readonly string[] = []) {
    for (const service of ["", ...services]) this.statuses.set(service, ServingStatus.SERVING);
  }

  /** Sets a service's status (making it known) and tells its watchers if it changed. Ignored after shutdown(). */
  setStatus(service: string, status: ServingStatus): void {
    if (this.shuttingDown) return;
    this.statuses.set(service, status);
    this.notify(service);
  }

  /**
   * Every service NOT_SERVING for good, watchers told and their streams ended,
   * so load balancers stop routing here before the server drains (open Watch
   * streams would otherwise hold up server.tryShutdown).
   */
  shutdown(): void {
    this.shuttingDown = true;
    for (const service of this.statuses.keys()) {
      this.statuses.set(service, ServingStatus.NOT_SERVING);
      this.notify(service);
    }
    for (const watcher of this.watchers) watcher.call.end();
    this.watchers.clear();
  }

  register(server: grpc.Server): void {
    const check: grpc.handleUnaryCall<HealthCheckRequest, HealthCheckResponse> = (call, callback) => {
      const status = this.statuses.get(call.request.service);
      if (status === undefined) callback({ code: grpc.status.NOT_FOUND, details: statusMessage(`unknown service "${call.request.service}"`) });
      else callback(null, create(HealthCheckResponseSchema, { status }));
    };
    const list: grpc.handleUnaryCall<unknown, HealthListResponse> = (_call, callback) => {
      if (this.statuses.size > maxListedServices) {
        callback({ code: grpc.status.RESOURCE_EXHAUSTED, details: `more than ${maxListedServices} services` });
        return;
      }
      const statuses = Object.fromEntries([...this.statuses].map(([service, status]) => [service, { status }]));
      callback(null, create(HealthListResponseSchema, { statuses }));
    };
    const watch: grpc.handleServerStreamingCall<HealthCheckRequest, HealthCheckResponse> = (call) => {
      const watcher: Watcher = { service: call.request.service, call, lastSent: this.currentForWatch(call.request.service) };
      call.write(create(HealthCheckResponseSchema, { status: watcher.lastSent }));
      if (this.shuttingDown) {
        call.end();
        return;
      }
      this.watchers.add(watcher);
      call.on("cancelled", () => this.watchers.delete(watcher));
    };
    server.addService(grpcServiceDefinition(Health), { check, list, watch } as grpc.UntypedServiceImplementation);
  }

  private currentForWatch(service: string): ServingStatus {
    return this.statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
  }

  private notify(service: string): void {
    const status = this.currentForWatch(service);
    for (const watcher of this.watchers) {
      if (watcher.service !== service || watcher.lastSent === status || watcher.call.cancelled) continue;
      watcher.lastSent = status;
      watcher.call.write(create(HealthCheckResponseSchema, { status }));
    }
  }
}

/** Registers the health service on a server, with the server and the named services SERVING. */
export function addHealthService(server: grpc.Server, services: readonly string[] = []): HealthService {
  const health = new HealthService(services);
  health.register(server);
  return health;
}
