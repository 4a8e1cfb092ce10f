import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { HealthCheckRequest, HealthCheckResponse } from "../../gen/grpc/health/v1/health_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus, HealthCheckResponseSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { grpcServiceDefinition } from "./service-definition.js";

/** grpc.health.v1.Health: Check and Watch, per service name ("" is the whole server). */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<{ service: string; call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse> }>();

  constructor(services: readonly string[]) {
    for (const s of ["", ...services]) this.statuses.set(s, ServingStatus.SERVING);
  }

  setStatus(service: string, status: ServingStatus): void {
    this.statuses.set(service, status);
    for (const w of this.watchers) if (w.service === service) w.call.write(create(HealthCheckResponseSchema, { status }));
  }

  /** Everything NOT_SERVING: load balancers stop sending before the server drains. */
  shutdown(): void {
    for (const service of this.statuses.keys()) this.setStatus(service, ServingStatus.NOT_SERVING);
    for (const w of this.watchers) w.call.end();
    this.watchers.clear();
  }

  register(server: grpc.Server): void {
    server.addService(grpcServiceDefinition(Health), {
      check: (call: grpc.ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: grpc.sendUnaryData<HealthCheckResponse>) => {
        const status = this.statuses.get(call.request.service);
        if (status === undefined) callback({ code: grpc.status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
        else callback(null, create(HealthCheckResponseSchema, { status }));
      },
      watch: (call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
        const service = call.request.service;
        call.write(create(HealthCheckResponseSchema, { status: this.statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN }));
        const watcher = { service, call };
        this.watchers.add(watcher);
        call.on("cancelled", () => this.watchers.delete(watcher));
      },
    } as grpc.UntypedServiceImplementation);
  }
}

/** Registers the health service with every service of the server SERVING. */
export function addHealthService(server: grpc.Server, services: readonly string[] = []): HealthService {
  const health = new HealthService(services);
  health.register(server);
  return health;
}
