/**
 * The part of Kong's JavaScript PDK (`kong-pdk`, the `kong` object every phase
 * handler receives) that the admission plugin uses, typed after the PDK's own
 * declarations (kong/request.d.ts, kong/response.d.ts, kong/service/*.d.ts,
 * kong/ctx/shared.d.ts, kong/log.d.ts). Every function is an RPC to Kong and
 * returns a promise; the plugin server maps `getRawBody` to the Lua PDK's
 * `kong.request.get_raw_body` and so on. Lua `nil` arrives as null/undefined;
 * Lua strings as strings or bytes.
 */
export type PdkBytes = Buffer | Uint8Array | string | null | undefined;
export type PdkHeaders = Record<string, string | string[]>;

export interface KongPdk {
  readonly request: {
    getHeader(name: string): Promise<string | null | undefined>;
    getMethod(): Promise<string>;
    getPath(): Promise<string>;
    getRawBody(): Promise<PdkBytes>;
  };
  readonly response: {
    exit(status: number, body?: string, headers?: PdkHeaders): Promise<null>;
    setHeaders(headers: PdkHeaders): Promise<null>;
    clearHeader(name: string): Promise<null>;
    getStatus(): Promise<number | null | undefined>;
    getSource(): Promise<string | null | undefined>;
  };
  readonly service: {
    readonly request: {
      setHeaders(headers: PdkHeaders): Promise<null>;
      clearHeader(name: string): Promise<null>;
      setRawBody(body: string): Promise<null>;
    };
    readonly response: {
      getStatus(): Promise<number | null | undefined>;
      getHeader(name: string): Promise<string | null | undefined>;
      getRawBody(): Promise<PdkBytes>;
    };
  };
  readonly ctx: {
    readonly shared: {
      get(key: string): Promise<unknown>;
      set(key: string, value: string): Promise<null>;
    };
  };
  readonly log: {
    err(...args: unknown[]): Promise<null>;
    warn(...args: unknown[]): Promise<null>;
  };
}

/** Bytes from the PDK as a Buffer; undefined for Lua nil. */
export function pdkBuffer(value: PdkBytes): Buffer | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value === "string") return Buffer.from(value, "utf8");
  return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}
