import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname, join, relative, sep } from "node:path";

/** The console's page may load only what this origin serves: no inline script or style, no other origin, no framing. */
export const consoleContentSecurityPolicy =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const securityHeaders = {
  "content-security-policy": consoleContentSecurityPolicy,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

const contentTypes: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

interface Asset {
  readonly body: Buffer;
  readonly contentType: string;
  readonly cacheControl: string;
}

/** Under this path the console is served; its API calls go to the Connect routes of the same origin. */
export const consolePath = "/console/";

/**
 * The admin console's static files, read once from `dir` (the Vite build): a request is
 * answered from that table by its exact path, so nothing outside the build can be named.
 * Files under assets/ carry a content hash in their name and are cached for a year; the
 * page itself is revalidated on every load. Every answer carries the console's CSP.
 * Returns false for paths outside /console.
 */
export function consoleAssets(dir: string): (req: IncomingMessage, res: ServerResponse) => boolean {
  const assets = readAssets(dir);
  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    if (path !== "/console" && !path.startsWith(consolePath)) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(res, 405, req.method, { "content-type": "text/plain; charset=utf-8", allow: "GET, HEAD" }, "method not allowed\n");
      return true;
    }
    if (path === "/console") {
      send(res, 308, req.method, { location: consolePath }, "");
      return true;
    }
    const asset = assets.get(path === consolePath ? `${consolePath}index.html` : path);
    if (!asset) {
      const body = assets.size === 0 ? "the console is not built: run npm run build\n" : "not found\n";
      send(res, 404, req.method, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" }, body);
      return true;
    }
    send(res, 200, req.method, { "content-type": asset.contentType, "cache-control": asset.cacheControl }, asset.body);
    return true;
  };
}

function readAssets(dir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  if (!existsSync(dir)) return assets;
  const walk = (at: string) => {
    for (const name of readdirSync(at)) {
      const file = join(at, name);
      if (statSync(file).isDirectory()) {
        walk(file);
        continue;
      }
      const rel = relative(dir, file).split(sep).join("/");
      const hashed = rel.startsWith("assets/");
      assets.set(`${consolePath}${rel}`, {
        body: readFileSync(file),
        contentType: contentTypes[extname(name)] ?? "application/octet-stream",
        cacheControl: hashed ? "public, max-age=31536000, immutable" : "no-cache",
      });
    }
  };
  walk(dir);
  return assets;
}

function send(res: ServerResponse, status: number, method: string | undefined, headers: Record<string, string>, body: Buffer | string): void {
  res.writeHead(status, { ...securityHeaders, "content-length": Buffer.byteLength(body), ...headers });
  res.end(method === "HEAD" ? undefined : body);
}
