import { createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";

/**
 * PEM files named by the configuration (TLS certificates and keys, JWT public
 * keys), read and checked once at start-up: a file that is missing, holds no
 * PEM, or holds something other than what its variable asks for fails there,
 * with a message naming the variable and the file, instead of at the first
 * handshake or — worse — by being skipped.
 */
export class PemFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PemFileError";
  }
}

interface PemBlock {
  readonly label: string;
  readonly pem: string;
}

const pemBlock = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?\r?\n-----END \1-----/g;

/** One or more certificates (a chain, or a CA bundle); returns them as PEM, each parsed. */
export function readCertificates(variable: string, path: string): string {
  const blocks = readBlocks(variable, path, "CERTIFICATE");
  blocks.forEach((b, i) => {
    if (b.label !== "CERTIFICATE") throw new PemFileError(`${variable}: ${path} holds a ${b.label} block; expected only certificates (BEGIN CERTIFICATE)`);
    try {
      new X509Certificate(b.pem);
    } catch (err) {
      throw new PemFileError(`${variable}: ${path}: certificate ${i + 1} does not parse (${reason(err)})`);
    }
  });
  return blocks.map((b) => b.pem).join("\n") + "\n";
}

/** One unencrypted private key. */
export function readPrivateKey(variable: string, path: string): string {
  const block = single(variable, path, readBlocks(variable, path, "PRIVATE KEY"), "private key");
  if (!/PRIVATE KEY$/.test(block.label)) throw new PemFileError(`${variable}: ${path} holds a ${block.label} block, not a private key`);
  if (block.label === "ENCRYPTED PRIVATE KEY" || /Proc-Type: 4,ENCRYPTED/.test(block.pem)) {
    throw new PemFileError(`${variable}: ${path} holds an encrypted private key; give it unencrypted (protect the file instead)`);
  }
  try {
    createPrivateKey(block.pem);
  } catch (err) {
    throw new PemFileError(`${variable}: ${path}: the private key does not parse (${reason(err)})`);
  }
  return `${block.pem}\n`;
}

/** A certificate chain and its private key, as a TLS endpoint presents them. */
export interface KeyPair {
  readonly certChainPem: string;
  readonly privateKeyPem: string;
}

/** A certificate chain file and the private key of its first certificate. */
export function readKeyPair(cert: { variable: string; path: string }, key: { variable: string; path: string }): KeyPair {
  const certChainPem = readCertificates(cert.variable, cert.path);
  const privateKeyPem = readPrivateKey(key.variable, key.path);
  if (!new X509Certificate(certChainPem).checkPrivateKey(createPrivateKey(privateKeyPem))) {
    throw new PemFileError(`${key.variable}: ${key.path} is not the private key of the (first) certificate in ${cert.variable} (${cert.path})`);
  }
  return { certChainPem, privateKeyPem };
}

/**
 * One public key: an SPKI `PUBLIC KEY`, a PKCS#1 `RSA PUBLIC KEY`, or a
 * certificate (its key is taken). Private keys are refused: a verifier has no
 * business holding one. Returns the key and its SPKI PEM.
 */
export function readPublicKey(variable: string, path: string): { readonly key: KeyObject; readonly spkiPem: string } {
  const block = single(variable, path, readBlocks(variable, path, "PUBLIC KEY"), "public key");
  if (/PRIVATE KEY$/.test(block.label)) throw new PemFileError(`${variable}: ${path} holds a private key; give the public key (BEGIN PUBLIC KEY) instead`);
  if (!["PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE"].includes(block.label)) {
    throw new PemFileError(`${variable}: ${path} holds a ${block.label} block; expected a public key (BEGIN PUBLIC KEY) or a certificate`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey(block.pem);
  } catch (err) {
    throw new PemFileError(`${variable}: ${path}: the ${block.label === "CERTIFICATE" ? "certificate" : "public key"} does not parse (${reason(err)})`);
  }
  return { key, spkiPem: key.export({ type: "spki", format: "pem" }).toString() };
}

function readBlocks(variable: string, path: string, expected: string): PemBlock[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new PemFileError(`${variable}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? reason(err)})`);
  }
  const blocks = [...text.matchAll(pemBlock)].map((m) => ({ label: m[1]!, pem: m[0] }));
  if (blocks.length === 0) throw new PemFileError(`${variable}: ${path} holds no PEM block (expected BEGIN ${expected})`);
  return blocks;
}

function single(variable: string, path: string, blocks: PemBlock[], what: string): PemBlock {
  if (blocks.length > 1) throw new PemFileError(`${variable}: ${path} holds ${blocks.length} PEM blocks; expected one ${what} per file`);
  return blocks[0]!;
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
