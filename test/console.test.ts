import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Browser, Locator, Page } from "playwright-core";
import { create } from "@bufbuild/protobuf";
import { BundleSchema, LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { parseProtoJson } from "../control-plane/policy/proto-json.js";
import { UsageGroupBy } from "../gen/admission/v1/policy_service_pb.js";
import { admissionClient, policyClient } from "./support/grpc-clients.js";
import { artifactsDir, launchChromium, missingBrowser } from "./support/browser.js";
import { freePort } from "./support/free-port.js";
import { admin, adminToken, Stack, waitFor } from "./data-plane/support/stack.js";

/**
 * The admin console in a real browser (Debian's chromium through playwright-core)
 * against a real control plane and data plane: sign in, read a tenant's usage as
 * GetUsage answers it, create an API key and use it through the data plane, revoke it,
 * dry-run and apply a limit change, find the audit entry, explain a decision, and sign
 * in again after the admin token changed without losing an unsaved edit. Screenshots
 * of every page go to test-artifacts/console/.
 */
const skip = missingBrowser();
const shots = artifactsDir("console");
const en = new Intl.NumberFormat("en-US");
/** How the console shows an amount: dollars with cents, the exact micro-USD on hover. */
const money = async (cell: Locator, micros: bigint) => {
  const text = await cell.innerText();
  assert.match(text, micros > 0n && micros < 5000n ? /^< \$0\.01$/ : new RegExp(`^\\$${(Number(micros) / 1e6).toFixed(2).replace(".", "\\.")}$`));
  assert.match(await cell.locator("[title]").getAttribute("title") ?? "", new RegExp(`\\(${en.format(micros)} micro-USD\\)$`));
};

describe("admin console in the browser", { skip }, () => {
  let stack: Stack;
  let browser: Browser;
  let page: Page;
  let url: string;
  const api = () => policyClient(`127.0.0.1:${stack.cp.grpcPort}`);
  const shot = (name: string) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  /** A small JPEG too, of the kind the README shows. */
  const readmeShot = (name: string) => page.screenshot({ path: join(shots, `${name}.jpg`), fullPage: true, type: "jpeg", quality: 55 });

  before(async () => {
    stack = await Stack.start({
      persistent: true,
      controlPlane: { httpPort: await freePort() },
      tenants: [
        { id: "acme", limits: [{ kind: "TOKENS", window: "DAY", per: "TENANT", value: 50_000 }, { kind: "REQUESTS", window: "MINUTE", per: "KEY", value: 100 }], keys: [{ id: "k-acme" }] },
        { id: "beta", keys: [{ id: "k-beta" }] },
      ],
    });
    // Seeded usage, through the data plane: four requests on the default model, two on a cheaper one, one for the other tenant.
    for (const model of ["gpt-a", "gpt-a", "gpt-a", "gpt-a", "small", "small"]) {
      await stack.client("k-acme").chat.completions.create({ model, messages: [{ role: "user", content: `draft a claim about ${model} and its prior art` }] });
    }
    await stack.client("k-beta").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "hello" }] });
    await waitFor(async () => (await stack.usage("acme")).requests === 6n && (await stack.usage("beta")).requests === 1n, "the seeded requests in the ledger");
    url = `http://127.0.0.1:${stack.cp.httpPort}/console/`;
    browser = await launchChromium();
    // The viewer is in New York: times show there, UTC on hover.
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-US", timezoneId: "America/New_York" });
    page = await context.newPage();
    page.setDefaultTimeout(15_000);
  });
  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  const signIn = async (token: string, actor?: string) => {
    await page.getByLabel("Admin token").fill(token);
    if (actor !== undefined) await page.getByLabel("Your name, for the audit log").fill(actor);
    await page.getByRole("button", { name: "Sign in" }).click();
  };
  const cell = (row: string, field: string) => page.locator(`${row} [data-field="${field}"]`);
  const digits = (text: string) => BigInt(text.replace(/[^\d]/g, "") || "0");

  test("a wrong admin token shows a clear sign-in error", async () => {
    await page.goto(url);
    await signIn("not-the-admin-token-at-all", "jane");
    const error = page.locator("#signin-error");
    await error.waitFor();
    assert.match(await error.innerText(), /That admin token was not accepted \(permission_denied: not the admin token\)/);
    assert.equal(await page.evaluate("sessionStorage.length"), 0, "a refused token is not kept");
    await shot("sign-in-refused");
  });

  test("signs in; the overview shows each tenant with this month's ledger totals and its meters", async () => {
    await signIn(adminToken, "jane");
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    const row = 'tr[data-tenant="acme"]';
    await page.locator(row).waitFor();
    const usage = await stack.usage("acme");
    assert.equal(await cell(row, "requests").innerText(), en.format(usage.requests));
    assert.equal(await cell(row, "tokens").innerText(), en.format(usage.inputTokens + usage.outputTokens));
    await money(cell(row, "cost"), usage.costMicros);
    assert.equal(await cell(row, "open").innerText(), "0");
    assert.match(await page.locator(row).innerText(), /TOKENS \/ DAY · tenant acme/);
    const stored = String(await page.evaluate("sessionStorage.getItem(\"admission-console-session\")"));
    assert.ok(!page.url().includes(adminToken), "the token is never in a URL");
    assert.equal((await page.context().cookies()).length, 0, "nor in a cookie");
    assert.match(stored, /"actor":"jane"/);
    await shot("overview");
    await readmeShot("overview");
  });

  test("the tenant page shows the tenant's usage as GetUsage answers it, by model, with a chart", async () => {
    await page.getByRole("link", { name: "acme" }).click();
    await page.getByRole("heading", { name: /Tenant acme/ }).waitFor();
    const total = "#usage-table tfoot tr";
    await page.locator(total).waitFor();
    const usage = await stack.usage("acme");
    const fields = { requests: usage.requests, inputTokens: usage.inputTokens, outputTokens: usage.outputTokens } as const;
    for (const [field, value] of Object.entries(fields)) assert.equal(await cell(total, field).innerText(), en.format(value), field);
    await money(cell(total, "costMicros"), usage.costMicros);
    const policy = api();
    try {
      const byModel = await policy.getUsage({ tenant: "acme", groupBy: [UsageGroupBy.MODEL] }, admin);
      for (const r of byModel.rows) {
        assert.equal(digits(await cell(`#usage-table tr[data-group="${r.group.model}"]`, "requests").innerText()), r.totals!.requests, r.group.model);
      }
      assert.equal(byModel.rows.length, 2);
    } finally {
      policy.close();
    }
    assert.equal(await page.locator(".chart canvas").count() > 0, true, "uPlot drew the chart");
    const effective = page.locator("#effective tr", { hasText: "TOKENS / DAY" });
    assert.match(await effective.innerText(), /tenant\s+acme\s+tenant\s+enforce/, "per, subject, where the limit comes from, mode");
    assert.match(await effective.innerText(), new RegExp(`${en.format(await meter("acme", "used"))} / 50,000 \\d+%`), "the live meter as GetEffectivePolicy reads it");
    await shot("tenant");
    await readmeShot("tenant");
  });

  let created = "";
  test("creates an API key, shows its secret once, and the key works through the data plane", async () => {
    const form = page.locator("form.create-key");
    await form.getByLabel("Key id").fill("k-console");
    await form.getByLabel("Description").fill("made in the console");
    await form.getByRole("button", { name: "Create key" }).click();
    const dialog = page.getByRole("dialog", { name: "API key k-console created" });
    await dialog.waitFor();
    created = await dialog.getByLabel("Secret").inputValue();
    assert.match(created, /^ak_[A-Za-z0-9_-]{43}$/);
    await shot("key-created");
    await dialog.getByRole("button", { name: "Done" }).click();
    await dialog.waitFor({ state: "detached" });
    assert.ok(!(await page.content()).includes(created), "the secret is gone from the page once the dialog is closed");
    await page.locator('tr[data-key="k-console"]').waitFor();
    assert.equal(await cell('tr[data-key="k-console"]', "status").innerText(), "active");
    const time = page.locator('tr[data-key="k-console"] time').first();
    assert.match(await time.getAttribute("title") ?? "", /^UTC: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    const res = await chat(created);
    assert.equal(res.status, 200, await res.text());
  });

  test("revokes the key and the next request with it is denied", async () => {
    const row = page.locator('tr[data-key="k-console"]');
    await row.getByRole("button", { name: "Revoke k-console" }).click();
    await row.getByRole("button", { name: "Confirm: revoke k-console" }).click();
    await waitFor(async () => (await cell('tr[data-key="k-console"]', "status").innerText()) === "revoked", "the key shown revoked");
    const res = await chat(created);
    assert.equal(res.status, 401);
    assert.match(await res.text(), /revoked/);
  });

  test("the webhooks panel shows the tenant's endpoint (no secret) and its deliveries with their attempts; one can be attempted again", async () => {
    const applied = await api().applyBundle({ bundle: parseProtoJson(BundleSchema, { webhooks: [{ id: "acme-hook", tenant: "acme", url: "http://127.0.0.1:1/hook", events: ["alert.threshold"] }] }) }, admin);
    const secret = applied.changes.find((c) => c.id === "acme-hook")!.generatedSecret;
    await stack.cp.events.raise(undefined, "alert.threshold", "acme", { tenant: "acme", threshold: 0.8 });
    await stack.cp.webhooks.runOnce();
    await page.reload();
    const row = page.locator("#webhooks tr[data-delivery]").first();
    await row.waitFor();
    await page.locator('#webhooks li[data-webhook="acme-hook"]').waitFor();
    assert.ok(!(await page.content()).includes(secret.slice(6)), "no secret on the page");
    assert.match(await cell("#webhooks tr[data-delivery]", "state").first().innerText(), /^pending/);
    assert.match(await row.innerText(), /no answer refused target: 127\.0\.0\.1 is a private or reserved address/);
    await shot("tenant-webhooks");
    await row.getByRole("button", { name: /^Attempt now/ }).click();
    await waitFor(async () => (await api().listWebhookDeliveries({ webhook: "acme-hook" }, admin)).deliveries[0]!.attempts.length === 2, "the second attempt");
  });

  test("the credits panel grants credits as the signed-in actor and shows the balance GetCreditBalance answers; a refund below what is spent shows the server's refusal", async () => {
    // beta becomes prepaid (everything else about it kept): its one request's cost is spent against its grants.
    const { tenant: beta } = await api().getTenant({ id: "beta" }, admin);
    beta!.prepaid = true;
    await api().applyBundle({ bundle: create(BundleSchema, { tenants: [beta!] }) }, admin);
    await page.goto(`${url}#/tenants/beta`);
    const panel = page.locator("#credits");
    await panel.getByLabel("Amount (USD)").fill("2.50");
    await panel.getByLabel("Note").fill("invoice 2026-12");
    await panel.getByRole("button", { name: "Grant" }).click();
    await panel.locator("tr[data-grant]").first().waitFor();
    const balance = await api().getCreditBalance({ tenant: "beta" }, admin);
    assert.equal(balance.grantedMicros, 2_500_000n);
    assert.ok(balance.spentMicros > 0n, "beta's seeded request is spent against its credits");
    await waitFor(async () => (await panel.locator('[data-field="balance"]').innerText()).trim() !== "", "the balance");
    await money(panel.locator('[data-field="balance"]'), balance.balanceMicros);
    await money(panel.locator('[data-field="spent"]'), balance.spentMicros);
    const [grant] = (await api().listCreditGrants({ tenant: "beta" }, admin)).grants;
    assert.equal(grant!.actor, "admin:jane");
    assert.match(await panel.locator(`tr[data-grant="${grant!.grantId}"]`).innerText(), /\$2\.50[\s\S]*admin:jane[\s\S]*invoice 2026-12/);
    await shot("tenant-credits");

    await panel.getByLabel("Amount (USD)").fill("-2.50");
    await panel.getByRole("button", { name: "Grant" }).click();
    const refused = panel.locator('.error[role="alert"]');
    await refused.waitFor();
    assert.match(await refused.innerText(), /failed_precondition: .*spent/);
    assert.equal((await api().getCreditBalance({ tenant: "beta" }, admin)).grantedMicros, 2_500_000n, "a refused refund changes nothing");
    // Back to acme, where the editing tests carry on.
    await page.goto(`${url}#/tenants/acme`);
    await page.locator("#webhooks").waitFor();
  });

  test("a limit change is dry-run first (the diff shown), then applied, and the meter's limit follows", async () => {
    await page.getByLabel("Limit 1 value").fill("75000");
    await page.getByRole("button", { name: "Preview changes (dry run)" }).click();
    const preview = page.getByRole("region", { name: "Dry run" });
    await preview.waitFor();
    assert.match(await preview.innerText(), /tenant acme: update — fields limits/);
    assert.match(await preview.innerText(), /TOKENS \/ DAY · tenant\s+50,000\s+75,000 \(changed\)/);
    assert.equal(await meter("acme"), 50_000n, "a dry run changes nothing");
    await shot("edit-dry-run");
    await preview.getByRole("button", { name: "Apply" }).click();
    await page.getByRole("status").filter({ hasText: /Applied: config version \d+/ }).waitFor();
    assert.equal(await meter("acme"), 75_000n);
    await waitFor(async () => /\/ 75,000/.test(await page.locator("#effective tr", { hasText: "TOKENS / DAY" }).innerText()), "the meter showing the new limit");
  });

  test("a rejected bundle shows the server's message naming the entity and field", async () => {
    await page.getByLabel("Limit 1 window").selectOption({ label: "REQUEST" });
    await page.getByRole("button", { name: "Preview changes (dry run)" }).click();
    const error = page.locator("#edit [role=alert]");
    await error.waitFor();
    assert.match(await error.innerText(), /The server refused the change: invalid_argument: .*tenant "acme": field limits\[0\]\.window: TOKENS needs a window/);
    await shot("edit-rejected");
    await page.getByRole("button", { name: "Discard changes" }).click();
    assert.equal(await page.getByLabel("Limit 1 window").inputValue(), String(Window.DAY));
  });

  test("the audit log finds the console's changes by actor and kind", async () => {
    await page.getByRole("link", { name: "Audit log" }).click();
    await page.getByLabel("Actor").fill("admin:jane");
    await page.getByLabel("Kind").fill("admin.");
    await page.getByRole("button", { name: "Search" }).click();
    const revoke = page.locator('tr[data-kind="admin.revoke_key"]');
    await revoke.waitFor();
    assert.match(await revoke.innerText(), /admin:jane[\s\S]*revoked API key "k-console"/);
    assert.match(await page.locator('tr[data-kind="admin.apply"]').first().innerText(), /admin:jane[\s\S]*update tenant "acme"/);
    assert.equal(await page.locator("table.audit tbody tr").filter({ hasNotText: "admin:jane" }).count(), 0, "only jane's events");
    await shot("audit");
  });

  test("explain shows the effective policy and what Admit would decide now, reserving nothing", async () => {
    await page.getByRole("link", { name: "Explain" }).click();
    await page.getByLabel("Tenant").selectOption("acme");
    await page.getByLabel("or API key").selectOption("k-acme");
    await page.getByLabel("Task").selectOption("DRAFT");
    await page.getByRole("button", { name: "Explain" }).click();
    const verdict = page.locator(".verdict");
    await verdict.waitFor();
    assert.match(await verdict.innerText(), /Allowed \(HTTP 200\)/);
    assert.match(await page.locator("#decision").innerText(), /Max output tokens \(clamped\)\s+500/);
    const policy = api();
    try {
      const [status] = (await policy.listTenantStatus({ tenant: "acme" }, admin)).tenants;
      assert.equal(status!.openReservations, 0n, "nothing reserved");
    } finally {
      policy.close();
    }
    await shot("explain");
    await page.getByRole("link", { name: "Plans & catalog" }).click();
    await page.getByRole("heading", { name: "Plan PRO" }).waitFor();
    assert.match(await page.locator("#models").innerText(), /gpt-a\s+PRO_M\s+up-a\s+gpt-a-2024\s+\$1\.00 \/ M/);
    await shot("plans");
  });

  test("a token refused mid-session returns to sign-in, keeps the unsaved edit, and the edit applies after signing in again", async () => {
    await page.getByRole("link", { name: "Overview" }).click();
    await page.getByRole("link", { name: "acme" }).click();
    await page.getByLabel("Limit 2 value").fill("150");
    // The operator rotates the admin token: the control plane restarts with a new one.
    const rotated = "rotated-admin-token-0123456789";
    await stack.cp.stop();
    await stack.startControlPlane({ adminToken: rotated });
    await page.getByRole("button", { name: "Preview changes (dry run)" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor();
    assert.match(await dialog.innerText(), /The admin token was refused \(permission_denied: not the admin token\)\. Sign in again: what you were editing is kept\./);
    assert.equal(await page.getByLabel("Limit 2 value").inputValue(), "150", "the edit is still there");
    assert.equal(await dialog.getByLabel("Your name, for the audit log").inputValue(), "jane");
    await shot("session-ended");
    await dialog.getByLabel("Admin token").fill(rotated);
    await dialog.getByRole("button", { name: "Sign in" }).click();
    await dialog.waitFor({ state: "detached" });
    assert.equal(await page.getByLabel("Limit 2 value").inputValue(), "150");
    await page.getByRole("button", { name: "Preview changes (dry run)" }).click();
    await page.getByRole("region", { name: "Dry run" }).getByRole("button", { name: "Apply" }).click();
    await page.getByRole("status").filter({ hasText: /Applied/ }).waitFor();
    const policy = api();
    try {
      const { tenant } = await policy.getTenant({ id: "acme" }, { authorization: `Bearer ${rotated}` });
      assert.equal(tenant!.limits.find((l) => l.kind === LimitKind.REQUESTS)?.value, 150n);
    } finally {
      policy.close();
    }
  });

  /** The effective TOKENS/DAY limit of a tenant, or its meter's use, from the API. */
  async function meter(tenant: string, what: "value" | "used" = "value"): Promise<bigint> {
    const admission = admissionClient(`127.0.0.1:${stack.cp.grpcPort}`);
    try {
      const policy = await admission.getEffectivePolicy({ tenant }, admin);
      return policy.limits.find((l) => l.kind === LimitKind.TOKENS && l.window === Window.DAY)![what];
    } finally {
      admission.close();
    }
  }

  function chat(key: string): Promise<Response> {
    return fetch(`${stack.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-a", messages: [{ role: "user", content: "hi" }] }),
    });
  }
});

