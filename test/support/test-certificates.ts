import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** File paths of a CA and certificates it signed (PEM, keys unencrypted), made by `openssl` for one test run. */
export interface TestCertificates {
  readonly dir: string;
  readonly caCert: string;
  /** For localhost and 127.0.0.1 (and the DNS name `admission-control-plane`). */
  readonly serverCert: string;
  readonly serverKey: string;
  /** A client certificate (extendedKeyUsage clientAuth) signed by the CA. */
  readonly clientCert: string;
  readonly clientKey: string;
  /** A second, unrelated CA and a client certificate it signed. */
  readonly otherCaCert: string;
  readonly otherClientCert: string;
  readonly otherClientKey: string;
  /** Removes the directory. */
  remove(): void;
}

/** A fresh CA, a server and a client certificate (P-256 keys, valid one day), and an unrelated CA with its own client. */
export function makeTestCertificates(): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), "adm-tls-"));
  const at = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  const key = (name: string) => openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", at(name));
  const ca = (name: string, cn: string) => {
    key(`${name}.key`);
    openssl("req", "-x509", "-new", "-key", at(`${name}.key`), "-out", at(`${name}.pem`), "-days", "1", "-subj", `/CN=${cn}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  };
  const leaf = (name: string, caName: string, cn: string, extensions: string) => {
    key(`${name}.key`);
    openssl("req", "-new", "-key", at(`${name}.key`), "-out", at(`${name}.csr`), "-subj", `/CN=${cn}`);
    writeFileSync(at(`${name}.ext`), extensions);
    openssl("x509", "-req", "-in", at(`${name}.csr`), "-CA", at(`${caName}.pem`), "-CAkey", at(`${caName}.key`), "-CAcreateserial",
      "-out", at(`${name}.pem`), "-days", "1", "-extfile", at(`${name}.ext`));
  };
  ca("ca", "admission test CA");
  leaf("server", "ca", "admission-control-plane", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:admission-control-plane,IP:127.0.0.1\n");
  leaf("client", "ca", "data-plane", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n");
  ca("other-ca", "some other CA");
  leaf("other-client", "other-ca", "intruder", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n");
  return {
    dir,
    caCert: at("ca.pem"),
    serverCert: at("server.pem"),
    serverKey: at("server.key"),
    clientCert: at("client.pem"),
    clientKey: at("client.key"),
    otherCaCert: at("other-ca.pem"),
    otherClientCert: at("other-client.pem"),
    otherClientKey: at("other-client.key"),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
