import http2 from "node:http2";

/** How the server answered a raw gRPC call. */
export type RawGrpcAnswer =
  | { readonly kind: "status"; readonly httpStatus: number; readonly grpcStatus: number | undefined; readonly grpcMessage: string; readonly messages: Buffer[] }
  /** The stream or the connection was reset (e.g. headers over the server's limits). */
  | { readonly kind: "reset"; readonly code: number | string }
  /** The caller abandoned the call (slow-loris). */
  | { readonly kind: "abandoned" }
  | { readonly kind: "timeout" };

/** A gRPC length-prefixed frame; `declaredLength` lies about the length, `compressed` sets the flag. */
export function grpcFrame(payload: Uint8Array, options: { compressed?: boolean; declaredLength?: number } = {}): Buffer {
  const head = Buffer.alloc(5);
  head[0] = options.compressed ? 1 : 0;
  head.writeUInt32BE((options.declaredLength ?? payload.length) >>> 0, 1);
  return Buffer.concat([head, payload]);
}

export interface RawCallOptions {
  readonly headers?: Record<string, string | string[]>;
  /** Body bytes, sent at once unless trickleMs is given. */
  readonly body?: Buffer;
  /** Sends the body one byte per trickleMs... */
  readonly trickleMs?: number;
  /** ...and abandons the call (RST_STREAM CANCEL) after this many bytes. */
  readonly abandonAfterBytes?: number;
  /** An answer must come within this. */
  readonly timeoutMs: number;
  /** Sends the body and cancels the call (RST_STREAM CANCEL) in the same write: a caller that left as soon as it asked. */
  readonly cancelWithBody?: boolean;
  /** On a connection of its own (a flood may make the server close the whole connection). */
  readonly ownConnection?: boolean;
}

/**
 * gRPC spoken by hand over node:http2, to send what no gRPC client would:
 * broken frames, lying length prefixes, floods of metadata, trickled bodies.
 */
export class RawGrpcClient {
  private session: http2.ClientHttp2Session | undefined;

  constructor(private readonly address: string) {}

  private open(): http2.ClientHttp2Session {
    const session = http2.connect(`http://${this.address}`, { maxHeaderListPairs: 100_000, maxSendHeaderBlockLength: 4 * 1024 * 1024 } as http2.ClientSessionOptions);
    session.on("error", () => undefined);
    session.on("goaway", () => session.destroy());
    return session;
  }

  private shared(): http2.ClientHttp2Session {
    if (!this.session || this.session.closed || this.session.destroyed) this.session = this.open();
    return this.session;
  }

  call(path: string, options: RawCallOptions): Promise<RawGrpcAnswer> {
    const session = options.ownConnection ? this.open() : this.shared();
    return new Promise((resolve) => {
      let settled = false;
      const done = (answer: RawGrpcAnswer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (options.ownConnection) session.destroy();
        resolve(answer);
      };
      const timer = setTimeout(() => {
        stream?.close(http2.constants.NGHTTP2_CANCEL);
        done({ kind: "timeout" });
      }, options.timeoutMs);
      let stream: http2.ClientHttp2Stream | undefined;
      try {
        stream = session.request({
          ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...options.headers,
        });
      } catch (err) {
        done({ kind: "reset", code: (err as NodeJS.ErrnoException).code ?? String(err) });
        return;
      }
      let httpStatus = 0;
      let headerStatus: string | undefined;
      let headerMessage = "";
      const chunks: Buffer[] = [];
      stream.on("response", (headers) => {
        httpStatus = Number(headers[":status"]);
        headerStatus = headers["grpc-status"] as string | undefined;
        headerMessage = (headers["grpc-message"] as string | undefined) ?? "";
      });
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("trailers", (trailers) => {
        headerStatus = (trailers["grpc-status"] as string | undefined) ?? headerStatus;
        headerMessage = (trailers["grpc-message"] as string | undefined) ?? headerMessage;
      });
      // A server may reset the stream right after its status (e.g. while the body was still coming): the status is the answer.
      let streamError: string | undefined;
      stream.on("error", (err: NodeJS.ErrnoException) => {
        streamError = err.code ?? err.message;
      });
      stream.on("close", () => {
        if (httpStatus === 0 || headerStatus === undefined) return done({ kind: "reset", code: streamError ?? stream!.rstCode ?? "closed" });
        done({
          kind: "status", httpStatus,
          grpcStatus: headerStatus === undefined ? undefined : Number(headerStatus),
          grpcMessage: decodeURIComponent(headerMessage),
          messages: splitFrames(Buffer.concat(chunks)),
        });
      });
      const body = options.body ?? Buffer.alloc(0);
      if (options.cancelWithBody) {
        stream.end(body);
        stream.close(http2.constants.NGHTTP2_CANCEL);
        done({ kind: "abandoned" });
        return;
      }
      if (options.trickleMs === undefined) {
        stream.end(body);
        return;
      }
      let sent = 0;
      const limit = Math.min(body.length, options.abandonAfterBytes ?? body.length);
      const drip = setInterval(() => {
        if (settled || stream!.destroyed) return clearInterval(drip);
        if (sent >= limit) {
          clearInterval(drip);
          stream!.close(http2.constants.NGHTTP2_CANCEL);
          done({ kind: "abandoned" });
          return;
        }
        stream!.write(body.subarray(sent, sent + 1));
        sent++;
      }, options.trickleMs);
    });
  }

  close(): void {
    this.session?.destroy();
  }
}

function splitFrames(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at + 5 <= data.length) {
    const length = data.readUInt32BE(at + 1);
    out.push(data.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return out;
}
