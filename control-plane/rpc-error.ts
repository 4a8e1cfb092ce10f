import type { status } from "@grpc/grpc-js";

/** A call that cannot be answered: bad input, unknown entity, no permission. Carries its gRPC status. */
export class RpcError extends Error {
  constructor(readonly code: status, message: string) {
    super(message);
    this.name = "RpcError";
  }
}
