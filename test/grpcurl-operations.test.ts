import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { adminToken, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { ReflectionClient } from "./support/reflection-client.js";

const root = new URL("../../", import.meta.url);
const readme = readFileSync(new URL("README.md", root), "utf8");

/** The grpcurl lines of the README's operations block, in order. */
const commands = readme.split("\n").filter((l) => l.startsWith("grpcurl -plaintext "));

/** Splits a shell command line: quotes, \" escapes, $VAR expansion, `< file`. */
function shellWords(line: string, vars: Record<string, string>): { words: string[]; stdin?: string } {
  const words: string[] = [];
  let stdin: string | undefined;
  let i = 0;
  while (i < line.length) {
    while (line[i] === " ") i++;
    if (i >= line.length) break;
    if (line[i] === "<") {
      i++;
      while (line[i] === " ") i++;
      const start = i;
      while (i < line.length && line[i] !== " ") i++;
      stdin = readFileSync(new URL(line.slice(start, i), root), "utf8");
      continue;
    }
    let word = "";
    while (i < line.length && line[i] !== " ") {
      const c = line[i]!;
      if (c === "'") {
        const end = line.indexOf("'", i + 1);
        word += line.slice(i + 1, end);
        i = end + 1;
      } else if (c === '"') {
        i++;
        while (line[i] !== '"') {
          if (line[i] === "\\") {
            word += line[i + 1];
            i += 2;
          } else if (line[i] === "$") {
            const name = /^\$([A-Z_]+)/.exec(line.slice(i))![1]!;
            word += vars[name] ?? "";
            i += name.length + 1;
          } else word += line[i++];
        }
        i++;
      } else word += line[i++];
    }
    words.push(word);
  }
  return { words, stdin };
}

describe("the README's grpcurl operations, through reflection only", () => {
  let t: TestControlPlane;
  let grpcurl: ReflectionClient;
  before(async () => {
    t = await startTestControlPlane({ config: { demo: true } });
    grpcurl = new ReflectionClient(t.address);
  });
  after(async () => {
    grpcurl.close();
    await t.close();
  });

  test("every command runs as written and does what the README says", async () => {
    assert.equal(commands.length, 12);
    const vars = { ADMIN: adminToken, KEY: t.cp.demoApiKey! };
    const results: any[] = [];
    for (const line of commands) {
      const { words, stdin } = shellWords(line, vars);
      const headers: Record<string, string> = {};
      let body: string | undefined;
      const rest: string[] = [];
      for (let i = 1; i < words.length; i++) {
        if (words[i] === "-plaintext") continue;
        if (words[i] === "-H") {
          const [k, ...v] = words[++i]!.split(":");
          headers[k!.trim().toLowerCase()] = v.join(":").trim();
        } else if (words[i] === "-d") body = words[++i] === "@" ? stdin : words[i];
        else rest.push(words[i]!);
      }
      const [, verb, target] = rest; // host, then list | describe X | service/Method
      if (verb === "list") results.push(await grpcurl.list());
      else if (verb === "describe") results.push(await grpcurl.describeMessage(target!));
      else results.push(await grpcurl.call(verb!, JSON.parse(body ?? "{}"), headers));
    }
    const [list, describe, apply, dryRun, raise, suspend, admit, explain, usage, revoke, grant, balance] = results;
    assert.ok(list.includes("admission.v1.PolicyService") && list.includes("envoy.service.auth.v3.Authorization"));
    assert.ok(describe.includes("ati_tokens = 4") && describe.includes("api_keys = 7"));
    assert.equal(apply.applied, true);
    const diff = dryRun.changes.find((c: any) => c.id === "acme");
    assert.equal(diff.action, "CHANGE_ACTION_UPDATE");
    assert.ok(diff.fields.includes("limits"), JSON.stringify(diff));
    assert.notEqual(dryRun.applied, true);
    assert.equal(raise.applied, true);
    assert.equal(suspend.applied, true);
    const tenant = await grpcurl.call("admission.v1.PolicyService/GetTenant", { id: "acme" }, { authorization: `Bearer ${adminToken}` });
    assert.equal(tenant.tenant.status, "ACCOUNT_STATUS_SUSPENDED");
    assert.equal(tenant.tenant.limits[0].value, "900000000");
    assert.equal(admit.allowed, true);
    assert.equal(admit.maxOutputTokens, "512");
    assert.equal(explain.plan, "PRO");
    assert.ok(explain.limits.length > 0);
    assert.equal(typeof usage, "object");
    assert.equal(revoke.apiKey.revoked, true);
    const denied = await grpcurl.call("admission.v1.AdmissionService/Admit", { credential: vars.KEY, task: "LLM2_DRAFT" });
    assert.equal(denied.reason, "DENY_REASON_UNAUTHENTICATED", "the revoked key no longer admits");
    assert.equal(grant.grant.amountMicros, "25000000");
    assert.equal(grant.grant.actor, "admin:jane");
    assert.equal(balance.grantedMicros, "25000000");
    const audit = await grpcurl.call("admission.v1.PolicyService/ListAuditEvents", { kind: "admin.apply" }, { authorization: `Bearer ${adminToken}` });
    assert.ok(audit.events.some((e: any) => e.actor === "admin:jane"), "the actor header reaches the audit log");
  });
});
