import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { consoleAssets, consoleContentSecurityPolicy } from "../control-plane/console-assets.js";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";

/** A raw GET (or another method) with the path exactly as given: no client-side normalisation of "..". */
function get(port: number, path: string, method = "GET"): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("the console's files", () => {
  let dir: string;
  let server: Server;
  let port: number;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "console-assets-"));
    mkdirSync(join(dir, "assets"));
    writeFileSync(join(dir, "index.html"), "<!doctype html><title>console</title>");
    writeFileSync(join(dir, "assets", "index-abc123.js"), "console.log(1)");
    writeFileSync(join(dir, "assets", "index-abc123.css"), "body{}");
    writeFileSync(join(tmpdir(), "console-assets-outside.txt"), "secret");
    const handle = consoleAssets(dir);
    server = createServer((req, res) => {
      if (!handle(req, res)) res.writeHead(418).end();
    });
    port = await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(join(tmpdir(), "console-assets-outside.txt"), { force: true });
  });

  test("the page, with the strict CSP and nosniff, revalidated on every load", async () => {
    const page = await get(port, "/console/");
    assert.equal(page.status, 200);
    assert.equal(page.headers["content-type"], "text/html; charset=utf-8");
    assert.equal(page.headers["content-security-policy"], consoleContentSecurityPolicy);
    assert.match(consoleContentSecurityPolicy, /default-src 'self'; script-src 'self'; style-src 'self';.*connect-src 'self'; frame-ancestors 'none'/);
    assert.equal(page.headers["x-content-type-options"], "nosniff");
    assert.equal(page.headers["cache-control"], "no-cache");
    assert.equal((await get(port, "/console")).headers.location, "/console/");
    const head = await get(port, "/console/", "HEAD");
    assert.equal(head.status, 200);
    assert.equal(head.body, "");
  });

  test("hashed assets are cached for a year, with their content type", async () => {
    const js = await get(port, "/console/assets/index-abc123.js");
    assert.equal(js.status, 200);
    assert.equal(js.body, "console.log(1)");
    assert.equal(js.headers["content-type"], "text/javascript; charset=utf-8");
    assert.equal(js.headers["cache-control"], "public, max-age=31536000, immutable");
    assert.equal((await get(port, "/console/assets/index-abc123.css")).headers["content-type"], "text/css; charset=utf-8");
  });

  test("nothing outside the build can be named; other methods and other paths are refused or left alone", async () => {
    for (const path of ["/console/../console-assets-outside.txt", "/console/assets/../../console-assets-outside.txt", "/console/%2e%2e/console-assets-outside.txt", "/console/assets/", "/console/nope.js", "/console//index.html"]) {
      const res = await get(port, path);
      assert.equal(res.status, 404, path);
      assert.doesNotMatch(res.body, /secret/);
      assert.equal(res.headers["content-security-policy"], consoleContentSecurityPolicy);
    }
    assert.equal((await get(port, "/console/", "POST")).status, 405);
    assert.equal((await get(port, "/metrics")).status, 418, "not the console's");
  });

  test("without a build, the page says how to make one", async () => {
    const empty = consoleAssets(join(dir, "missing"));
    const s = createServer((req, res) => void empty(req, res));
    const p = await new Promise<number>((resolve) => s.listen(0, "127.0.0.1", () => resolve((s.address() as { port: number }).port)));
    try {
      const res = await get(p, "/console/");
      assert.equal(res.status, 404);
      assert.match(res.body, /npm run build/);
    } finally {
      s.close();
    }
  });
});

describe("the built console on the control plane's HTTP port", () => {
  let t: TestControlPlane;
  before(async () => {
    t = await startTestControlPlane();
  });
  after(() => t.close());

  test("serves the Vite build: no inline script or style, every asset from this origin", async () => {
    const page = await get(t.cp.httpPort, "/console/");
    assert.equal(page.status, 200, "npm run build writes dist/console");
    assert.equal(page.headers["content-security-policy"], consoleContentSecurityPolicy);
    const scripts = [...page.body.matchAll(/<script\b([^>]*)>/g)].map((m) => m[1]!);
    assert.ok(scripts.length > 0);
    for (const attrs of scripts) assert.match(attrs, /\bsrc="\/console\/assets\/[\w.-]+\.js"/, "a script is a file of this origin");
    assert.doesNotMatch(page.body, /<style|\sstyle=|\son\w+=/i, "no inline style or handler");
    assert.doesNotMatch(page.body, /https?:\/\//, "no other origin");
    for (const [, src] of page.body.matchAll(/(?:src|href)="(\/console\/assets\/[^"]+)"/g)) {
      const asset = await get(t.cp.httpPort, src!);
      assert.equal(asset.status, 200, src);
      assert.equal(asset.headers["cache-control"], "public, max-age=31536000, immutable");
      assert.doesNotMatch(asset.body, /https?:\/\/(?!www\.w3\.org)[a-z]/i, `${src} loads nothing from another origin`);
    }
  });
});
