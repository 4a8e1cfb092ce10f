import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus, HealthCheckResponseSchema, HealthListResponseSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { grpcServiceDefinition } from "./service-definition.js";
import { statusMessage } from "../rpc-error.js";
export { ServingStatus };
/** The most services List answers with, as the protocol specifies. */
const maxListedServices = 100;
/**
 * grpc.health.v1.Health: Check, List and Watch over a status per service
 * name, "" being the whole server. Kubernetes gRPC probes, Envoy and load
 * balancers read it.
 */
export class HealthService {
    statuses = new Map();
    watchers = new Set();
    shuttingDown = false;
    /** The server ("") and each named service start SERVING. */
    constructor(services = []) {
        for (const service of ["", ...services])
            this.statuses.set(service, ServingStatus.SERVING);
    }
    /** Sets a service's status (making it known) and tells its watchers if it changed. Ignored after shutdown(). */
    setStatus(service, status) {
        if (this.shuttingDown)
            return;
        this.statuses.set(service, status);
        this.notify(service);
    }
    /**
     * Every service NOT_SERVING for good, watchers told and their streams ended,
     * so load balancers stop routing here before the server drains (open Watch
     * streams would otherwise hold up server.tryShutdown).
     */
    shutdown() {
        this.shuttingDown = true;
        for (const service of this.statuses.keys()) {
            this.statuses.set(service, ServingStatus.NOT_SERVING);
            this.notify(service);
        }
        for (const watcher of this.watchers)
            watcher.call.end();
        this.watchers.clear();
    }
    register(server) {
        const check = (call, callback) => {
            const status = this.statuses.get(call.request.service);
            if (status === undefined)
                callback({ code: grpc.status.NOT_FOUND, details: statusMessage(`unknown service "${call.request.service}"`) });
            else
                callback(null, create(HealthCheckResponseSchema, { status }));
        };
        const list = (_call, callback) => {
            if (this.statuses.size > maxListedServices) {
                callback({ code: grpc.status.RESOURCE_EXHAUSTED, details: `more than ${maxListedServices} services` });
                return;
            }
            const statuses = Object.fromEntries([...this.statuses].map(([service, status]) => [service, { status }]));
            callback(null, create(HealthListResponseSchema, { statuses }));
        };
        const watch = (call) => {
            const watcher = { service: call.request.service, call, lastSent: this.currentForWatch(call.request.service) };
            call.write(create(HealthCheckResponseSchema, { status: watcher.lastSent }));
            if (this.shuttingDown) {
                call.end();
                return;
            }
            this.watchers.add(watcher);
            call.on("cancelled", () => this.watchers.delete(watcher));
        };
        server.addService(grpcServiceDefinition(Health), { check, list, watch });
    }
    currentForWatch(service) {
        return this.statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
    }
    notify(service) {
        const status = this.currentForWatch(service);
        for (const watcher of this.watchers) {
            if (watcher.service !== service || watcher.lastSent === status || watcher.call.cancelled)
                continue;
            watcher.lastSent = status;
            watcher.call.write(create(HealthCheckResponseSchema, { status }));
        }
    }
}
/** Registers the health service on a server, with the server and the named services SERVING. */
export function addHealthService(server, services = []) {
    const health = new HealthService(services);
    health.register(server);
    return health;
}
//# sourceMappingURL=health.js.map