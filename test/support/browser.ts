import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser } from "playwright-core";
import { requireServices } from "./services.js";

/** Debian's chromium (`apt-get install -y chromium`; .ci/run installs it when missing). */
export const chromiumPath = "/usr/bin/chromium";

/**
 * Whether the browser tests can run. Outside CI a missing chromium skips them with a
 * message; in CI (CI=true or ADMISSION_REQUIRE_SERVICES=1) it fails them.
 */
export function missingBrowser(): string | false {
  if (existsSync(chromiumPath)) return false;
  if (requireServices || process.env.CI === "true") throw new Error(`${chromiumPath} is missing but the browser tests are required here: apt-get install -y chromium`);
  return `chromium not installed (${chromiumPath}): apt-get install -y chromium to run the browser tests`;
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
