import { createHash, timingSafeEqual } from "node:crypto";
import { status as Code } from "@grpc/grpc-js";
import { RpcError } from "../rpc-error.js";

/** What a handler knows about its caller, whatever the transport (gRPC or Connect). */
export interface CallContext {
  /** Lower-case header / metadata lookup. */
  header(name: string): string | undefined;
  /** The caller went away (cancelled, disconnected); read when it matters: it can change while the call runs. */
  readonly cancelled?: boolean;
}

/** Checks the admin bearer token; returns the actor named in audit events. */
export function requireAdmin(ctx: CallContext, adminToken: string): string {
  const given = ctx.header("authorization") ?? "";
  const match = /^Bearer\s+(.+)$/i.exec(given);
  if (!match) throw new RpcError(Code.UNAUTHENTICATED, "admin calls need 'authorization: Bearer <admin token>'");
  // Digests of both, so the comparison is over 32 bytes whatever the length given: neither the token's
  // length nor a matching prefix changes its time.
  if (!timingSafeEqual(sha256(match[1]!.trim()), sha256(adminToken))) throw new RpcError(Code.PERMISSION_DENIED, "not the admin token");
  const actor = (ctx.header("x-admission-actor") ?? "").replace(/[^\w.@:-]/g, "").slice(0, 64);
  return actor ? `admin:${actor}` : "admin";
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** True when the call carries an admin token at all (it is then checked by requireAdmin). */
export function hasAdminToken(ctx: CallContext): boolean {
  return (ctx.header("authorization") ?? "") !== "";
}
