import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser } from "playwright-core";
import { missingPrograms } from "./services.js";

/** Debian's chromium (`apt-get install -y chromium`; .ci/run installs it when missing). */
export const chromiumPath = "/usr/bin/chromium";

/** Whether the browser tests can run: a missing chromium skips them with a message, or fails them where services are required (CI). */
export function missingBrowser(): string | false {
  return missingPrograms([chromiumPath], "apt-get install -y chromium");
}

/**
 * Headless chromium for a test, with a fresh profile, and nothing that would reach out
 * to the network on its own (this machine has none).
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Where a suite's screenshots go (git-ignored): test-artifacts/<name>/. */
export function artifactsDir(name: string): string {
  const dir = join(process.cwd(), "test-artifacts", name);
  mkdirSync(dir, { recursive: true });
  return dir;
}
