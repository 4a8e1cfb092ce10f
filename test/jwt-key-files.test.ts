import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import * as jose from "jose";
import { ConfigError, loadControlPlaneConfig } from "../control-plane/config.js";
import { CredentialVerifier } from "../control-plane/credentials.js";
import { PolicySnapshot } from "../control-plane/policy/policy-snapshot.js";
import { testBundle } from "./support/bundles.js";

const dir = mkdtempSync(join(tmpdir(), "adm-jwt-keys-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};
const spki = (k: KeyObject) => k.export({ type: "spki", format: "pem" }).toString();
const load = (files: string, extra: Record<string, string> = {}) => loadControlPlaneConfig({ ADMISSION_JWT_PUBLIC_KEY_FILES: files, ...extra });

test("a JWT public key file that yields no usable key fails start-up with a message naming the file", () => {
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const good = file("good.pem", spki(rsa.publicKey));
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    [file("empty.pem", ""), {}, /ADMISSION_JWT_PUBLIC_KEY_FILES: .*empty\.pem holds no PEM block/],
    [file("garbage.pem", "this is not a key\n"), {}, /garbage\.pem holds no PEM block/],
    [file("broken.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), {}, /broken\.pem: the public key does not parse/],
    [file("private.pem", rsa.privateKey.export({ type: "pkcs8", format: "pem" }).toString()), {}, /private\.pem holds a private key; give the public key/],
    [file("two.pem", spki(rsa.publicKey) + spki(rsa.publicKey)), {}, /two\.pem holds 2 PEM blocks; expected one public key per file/],
    [file("ed25519.pem", spki(generateKeyPairSync("ed25519").publicKey)), {}, /ed25519\.pem holds an ed25519 key, which none of the allowed algorithms \(RS256, ES256\) verifies/],
    [file("rsa1024.pem", spki(generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey)), {}, /rsa1024\.pem holds an rsa 1024-bit key/],
    [file("p384.pem", spki(generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey)), {}, /p384\.pem holds an ec secp384r1 key/],
    [good, { ADMISSION_JWT_ALGORITHMS: "ES256" }, /good\.pem holds an rsa 2048-bit key, which none of the allowed algorithms \(ES256\) verifies/],
    [`${good},${join(dir, "missing.pem")}`, {}, /ADMISSION_JWT_PUBLIC_KEY_FILES: cannot read .*missing\.pem \(ENOENT\)/],
  ];
  for (const [files, extra, message] of cases) {
    assert.throws(() => load(files, extra), (err: Error) => err instanceof ConfigError && message.test(err.message), files);
  }
  assert.deepEqual(load(good).jwt.algorithms, ["RS256", "ES256"]);
});

test("a certificate's public key is taken, as are SPKI and PKCS#1 keys; two RSA keys without kid are both tried", async () => {
  const keyPath = join(dir, "signer.key");
  const certPath = join(dir, "signer.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyPath, "-out", certPath, "-days", "1", "-subj", "/CN=issuer"], { stdio: "ignore" });
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const pkcs1 = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const config = load([certPath, file("ec.pem", spki(ec.publicKey)), file("pkcs1.pem", pkcs1.publicKey.export({ type: "pkcs1", format: "pem" }).toString())].join(","));
  assert.equal(config.jwt.publicKeyPems?.length, 3);
  assert.ok(config.jwt.publicKeyPems!.every((pem) => pem.startsWith("-----BEGIN PUBLIC KEY-----")), "given to the verifier as SPKI");

  const now = Date.UTC(2026, 10, 23, 12);
  const verifier = new CredentialVerifier({ ...config.jwt, clockToleranceSec: 0 }, () => now);
  const snapshot = PolicySnapshot.compile(testBundle(), 1);
  const claims = { sub: "alice", tenant_id: "acme" };
  const signed = (alg: string, key: KeyObject) => new jose.SignJWT(claims).setProtectedHeader({ alg }).setExpirationTime(Math.floor(now / 1000) + 600).sign(key);
  assert.equal((await verifier.authenticate(await signed("RS256", createPrivateKey(readFileSync(keyPath))), snapshot)).ok, true, "the certificate's key (one of two RSA keys without kid: both are tried)");
  assert.equal((await verifier.authenticate(await signed("ES256", ec.privateKey), snapshot)).ok, true, "the SPKI EC key");
  assert.equal((await verifier.authenticate(await signed("RS256", pkcs1.privateKey), snapshot)).ok, true, "the PKCS#1 RSA key");
  assert.equal((await verifier.authenticate(await signed("RS256", generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey), snapshot)).ok, false, "a key not configured");
});
