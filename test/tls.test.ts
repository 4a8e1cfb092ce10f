import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { AdmitRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { ConfigError, loadControlPlaneConfig, type ServerTls } from "../control-plane/config.js";
import { DataPlaneConfigError, loadDataPlaneConfig } from "../data-plane/config.js";
import { ControlPlaneClient } from "../data-plane/control-plane-client.js";
import { pluginConfig, PluginConfigError } from "../deploy/kong/schema.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { admissionClient, grpcCode, policyClient } from "./support/grpc-clients.js";
import { scenario, secretOf } from "./support/scenario.js";
import { makeTestCertificates, type TestCertificates } from "./support/test-certificates.js";
import { Stack } from "./data-plane/support/stack.js";

const admitInit = { credential: secretOf("k-acme"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n };

/** An HTTP(S) request to the control plane's HTTP port; rejects when the connection fails. */
function call(port: number, path: string, options: { tls?: { ca: string; cert?: string; key?: string }; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const send = options.tls ? httpsRequest : httpRequest;
    const tls = options.tls ? { ca: readFileSync(options.tls.ca), cert: options.tls.cert && readFileSync(options.tls.cert), key: options.tls.key && readFileSync(options.tls.key), servername: "localhost" } : {};
    const req = send({ host: "127.0.0.1", port, path, method: options.body ? "POST" : "GET", agent: false, headers: { "content-type": "application/json", ...options.headers }, ...tls }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end(options.body);
  });
}

describe("TLS on the control plane's ports and the links to it", () => {
  let certs: TestCertificates;
  let ca: Buffer;

  before(() => {
    certs = makeTestCertificates();
    ca = readFileSync(certs.caCert);
  });
  after(() => certs.remove());

  const serverTls = (env: Record<string, string> = {}): ServerTls =>
    loadControlPlaneConfig({ ADMISSION_TLS_CERT_FILE: certs.serverCert, ADMISSION_TLS_KEY_FILE: certs.serverKey, ...env }).tls!;
  const clientCredentials = (withCert: "none" | "ours" | "other" = "none") =>
    withCert === "none" ? grpc.credentials.createSsl(ca)
    : withCert === "ours" ? grpc.credentials.createSsl(ca, readFileSync(certs.clientKey), readFileSync(certs.clientCert))
    : grpc.credentials.createSsl(ca, readFileSync(certs.otherClientKey), readFileSync(certs.otherClientCert));

  async function startWithTls(tls: ServerTls, adminCredentials: grpc.ChannelCredentials): Promise<TestControlPlane> {
    const t = await startTestControlPlane({ config: { tls } });
    const policy = policyClient(t.address, adminCredentials);
    try {
      await policy.applyBundle({ bundle: scenario({ id: "acme", keys: [{ id: "k-acme" }] }) }, admin);
      return t;
    } catch (err) {
      await t.close();
      throw err;
    } finally {
      policy.close();
    }
  }

  async function admitCode(address: string, credentials: grpc.ChannelCredentials): Promise<grpc.status | "OK"> {
    const client = admissionClient(address, credentials);
    try {
      return await grpcCode(client.admit(admitInit));
    } finally {
      client.close();
    }
  }

  describe("server TLS", () => {
    let t: TestControlPlane;
    before(async () => (t = await startWithTls(serverTls(), clientCredentials())));
    after(() => t?.close());

    test("gRPC: a plaintext client is refused, a client trusting the CA is served, one trusting only the system roots is refused", async () => {
      assert.equal(await admitCode(t.address, grpc.credentials.createInsecure()), grpc.status.UNAVAILABLE);
      assert.equal(await admitCode(t.address, clientCredentials()), "OK");
      assert.equal(await admitCode(t.address, grpc.credentials.createSsl()), grpc.status.UNAVAILABLE, "the test CA is no system root");
    });

    test("the HTTP port serves HTTPS with the same certificate: Connect and the probes over TLS, plaintext HTTP refused", async () => {
      const port = t.cp.httpPort;
      const admit = await call(port, "/admission.v1.AdmissionService/Admit", { tls: { ca: certs.caCert }, body: JSON.stringify({ ...admitInit, inputTokens: "10", maxOutputTokens: "10" }) });
      assert.equal(admit.status, 200, admit.body);
      assert.equal(JSON.parse(admit.body).allowed, true);
      assert.equal((await call(port, "/healthz", { tls: { ca: certs.caCert } })).status, 200);
      await assert.rejects(call(port, "/healthz"), "a plaintext request gets no answer");
      await assert.rejects(call(port, "/healthz", { tls: { ca: certs.otherCaCert } }), /self[- ]signed|unable to verify|certificate/i, "the server's certificate is checked");
    });
  });

  describe("mTLS (ADMISSION_TLS_CLIENT_CA_FILE)", () => {
    let t: TestControlPlane;
    before(async () => (t = await startWithTls(serverTls({ ADMISSION_TLS_CLIENT_CA_FILE: certs.caCert }), clientCredentials("ours"))));
    after(() => t?.close());

    test("gRPC: a client without a certificate, or with one from another CA, is refused; with the CA's certificate it is served", async () => {
      assert.equal(await admitCode(t.address, clientCredentials("none")), grpc.status.UNAVAILABLE);
      assert.equal(await admitCode(t.address, clientCredentials("other")), grpc.status.UNAVAILABLE);
      assert.equal(await admitCode(t.address, clientCredentials("ours")), "OK");
    });

    test("HTTP: Connect calls and the console need the client certificate; /healthz, /readyz and /metrics do not (probes, scrapers)", async () => {
      const port = t.cp.httpPort;
      const body = JSON.stringify({ ...admitInit, inputTokens: "10", maxOutputTokens: "10" });
      const without = await call(port, "/admission.v1.AdmissionService/Admit", { tls: { ca: certs.caCert }, body });
      assert.equal(without.status, 401);
      assert.equal(JSON.parse(without.body).code, "unauthenticated");
      const usage = await call(port, "/admission.v1.PolicyService/GetUsage", { tls: { ca: certs.caCert }, body: JSON.stringify({ tenant: "acme" }), headers: admin });
      assert.equal(usage.status, 401, "the admin token alone does not open the Connect routes under mTLS");
      const other = await call(port, "/admission.v1.AdmissionService/Admit", { tls: { ca: certs.caCert, cert: certs.otherClientCert, key: certs.otherClientKey }, body });
      assert.equal(other.status, 401, "a certificate from another CA is not verified");
      const withCert = await call(port, "/admission.v1.AdmissionService/Admit", { tls: { ca: certs.caCert, cert: certs.clientCert, key: certs.clientKey }, body });
      assert.equal(withCert.status, 200, withCert.body);
      for (const path of ["/healthz", "/readyz", "/metrics"]) assert.equal((await call(port, path, { tls: { ca: certs.caCert } })).status, 200, path);
      assert.equal((await call(port, "/", { tls: { ca: certs.caCert } })).status, 401, "the console, like every other route, needs the certificate");
    });

    test("the Kong plugin's tls_* fields build the same link: refused without the client certificate, served with it", async () => {
      const base = { control_plane_address: t.address, tls: true, tls_ca_file: certs.caCert, tls_server_name: "admission-control-plane" };
      const admitWith = async (config: Record<string, unknown>) => {
        const client = new ControlPlaneClient({ address: t.address, tls: pluginConfig(config).tls, unary: true, timeoutMs: 5_000 });
        try {
          return await client.admit(create(AdmitRequestSchema, admitInit)).then(() => "OK", (err: { code: grpc.status }) => err.code);
        } finally {
          client.close();
        }
      };
      assert.equal(await admitWith(base), grpc.status.UNAVAILABLE);
      assert.equal(await admitWith({ ...base, tls_cert_file: certs.clientCert, tls_key_file: certs.clientKey }), "OK");
      assert.throws(() => pluginConfig({ ...base, tls_cert_file: certs.clientCert }), /config\.tls_cert_file and config\.tls_key_file must be set together/);
      assert.throws(() => pluginConfig({ ...base, tls: false }), (err: Error) => err instanceof PluginConfigError && /config\.tls is off/.test(err.message));
    });
  });

  test("the data plane proxies a request end to end over an mTLS link (CONTROL_PLANE_CA_FILE, _CERT_FILE, _KEY_FILE, _TLS_SERVER_NAME)", async () => {
    const dataPlaneEnv = {
      CONTROL_PLANE_CA_FILE: certs.caCert, CONTROL_PLANE_CERT_FILE: certs.clientCert, CONTROL_PLANE_KEY_FILE: certs.clientKey,
      // Dialled as 127.0.0.1; the certificate is checked for the Service's name instead.
      CONTROL_PLANE_TLS_SERVER_NAME: "admission-control-plane",
    };
    const stack = await Stack.start({
      tenants: [{ id: "acme" }],
      controlPlane: { tls: serverTls({ ADMISSION_TLS_CLIENT_CA_FILE: certs.caCert }) },
      dataPlane: { controlPlaneTls: loadDataPlaneConfig(dataPlaneEnv).controlPlaneTls },
      adminCredentials: clientCredentials("ours"),
    });
    try {
      stack.upA.usage = { prompt_tokens: 40, completion_tokens: 7 };
      const { data, response } = await stack.client("k-acme").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "over TLS" }] }).withResponse();
      assert.deepEqual(data.usage, { prompt_tokens: 40, completion_tokens: 7, total_tokens: 47 });
      const row = await stack.row("acme", response.headers.get("x-request-id")!);
      assert.deepEqual({ input: row.input_tokens, output: row.output_tokens, outcome: row.outcome }, { input: 40, output: 7, outcome: "SUCCESS" });
    } finally {
      await stack.stop();
    }
  });

  describe("a bad file fails start-up with a message naming the variable and the file", () => {
    const write = (name: string, text: string) => {
      const path = join(certs.dir, name);
      writeFileSync(path, text);
      return path;
    };

    test("control plane", () => {
      const load = (env: Record<string, string>) => () => loadControlPlaneConfig(env);
      const missing = join(certs.dir, "missing.pem");
      const garbage = write("garbage.pem", "not a PEM file\n");
      const empty = write("empty.pem", "");
      const encrypted = join(certs.dir, "encrypted.key");
      execFileSync("openssl", ["pkey", "-in", certs.serverKey, "-aes256", "-passout", "pass:secret", "-out", encrypted]);
      const cases: Array<[Record<string, string>, RegExp]> = [
        [{ ADMISSION_TLS_CERT_FILE: missing, ADMISSION_TLS_KEY_FILE: certs.serverKey }, /ADMISSION_TLS_CERT_FILE: cannot read .*missing\.pem \(ENOENT\)/],
        [{ ADMISSION_TLS_CERT_FILE: garbage, ADMISSION_TLS_KEY_FILE: certs.serverKey }, /ADMISSION_TLS_CERT_FILE: .*garbage\.pem holds no PEM block/],
        [{ ADMISSION_TLS_CERT_FILE: certs.serverKey, ADMISSION_TLS_KEY_FILE: certs.serverKey }, /ADMISSION_TLS_CERT_FILE: .*server\.key holds a PRIVATE KEY block; expected only certificates/],
        [{ ADMISSION_TLS_CERT_FILE: certs.serverCert, ADMISSION_TLS_KEY_FILE: empty }, /ADMISSION_TLS_KEY_FILE: .*empty\.pem holds no PEM block/],
        [{ ADMISSION_TLS_CERT_FILE: certs.serverCert, ADMISSION_TLS_KEY_FILE: certs.serverCert }, /ADMISSION_TLS_KEY_FILE: .*server\.pem holds a CERTIFICATE block, not a private key/],
        [{ ADMISSION_TLS_CERT_FILE: certs.serverCert, ADMISSION_TLS_KEY_FILE: certs.clientKey }, /ADMISSION_TLS_KEY_FILE: .*client\.key is not the private key of the \(first\) certificate in ADMISSION_TLS_CERT_FILE/],
        [{ ADMISSION_TLS_CERT_FILE: certs.serverCert, ADMISSION_TLS_KEY_FILE: encrypted }, /ADMISSION_TLS_KEY_FILE: .*encrypted\.key holds an encrypted private key/],
        [{ ADMISSION_TLS_CERT_FILE: certs.serverCert }, /ADMISSION_TLS_CERT_FILE and ADMISSION_TLS_KEY_FILE must be set together/],
        [{ ADMISSION_TLS_CLIENT_CA_FILE: certs.caCert }, /ADMISSION_TLS_CLIENT_CA_FILE needs ADMISSION_TLS_CERT_FILE/],
        [{ ADMISSION_TLS_CERT_FILE: certs.serverCert, ADMISSION_TLS_KEY_FILE: certs.serverKey, ADMISSION_TLS_CLIENT_CA_FILE: garbage }, /ADMISSION_TLS_CLIENT_CA_FILE: .*garbage\.pem holds no PEM block/],
      ];
      for (const [env, message] of cases) assert.throws(load(env), (err: Error) => err instanceof ConfigError && message.test(err.message), JSON.stringify(env));
    });

    test("data plane", () => {
      const garbage = write("garbage.pem", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
      const cases: Array<[Record<string, string>, RegExp]> = [
        [{ CONTROL_PLANE_CA_FILE: join(certs.dir, "missing.pem") }, /CONTROL_PLANE_CA_FILE: cannot read .*missing\.pem/],
        [{ CONTROL_PLANE_CA_FILE: garbage }, /CONTROL_PLANE_CA_FILE: .*garbage\.pem: certificate 1 does not parse/],
        [{ CONTROL_PLANE_CERT_FILE: certs.clientCert }, /CONTROL_PLANE_CERT_FILE and CONTROL_PLANE_KEY_FILE must be set together/],
        [{ CONTROL_PLANE_CERT_FILE: certs.clientCert, CONTROL_PLANE_KEY_FILE: certs.serverKey }, /CONTROL_PLANE_KEY_FILE: .*server\.key is not the private key/],
        [{ CONTROL_PLANE_TLS: "0", CONTROL_PLANE_CA_FILE: certs.caCert }, /CONTROL_PLANE_TLS is off, but CONTROL_PLANE_CA_FILE asks for TLS/],
        [{ CONTROL_PLANE_TLS: "maybe" }, /CONTROL_PLANE_TLS must be 1 or 0/],
      ];
      for (const [env, message] of cases) assert.throws(() => loadDataPlaneConfig(env), (err: Error) => err instanceof DataPlaneConfigError && message.test(err.message), JSON.stringify(env));
      assert.equal(loadDataPlaneConfig({}).controlPlaneTls, undefined, "plaintext unless asked");
      assert.deepEqual(loadDataPlaneConfig({ CONTROL_PLANE_TLS: "1" }).controlPlaneTls, { caPem: undefined, serverName: undefined }, "TLS with the system's roots");
    });
  });
});
