import assert from "node:assert/strict";
import { test } from "node:test";
import { Window } from "../gen/admission/v1/policy_pb.js";
import { windowSpan } from "../control-plane/windows.js";

test("calendar windows are aligned in UTC", () => {
  const t = Date.UTC(2026, 0, 31, 23, 59, 59, 999);
  assert.deepEqual(windowSpan(Window.MONTH, t), { startMs: Date.UTC(2026, 0, 1), endMs: Date.UTC(2026, 1, 1) });
  assert.deepEqual(windowSpan(Window.DAY, t), { startMs: Date.UTC(2026, 0, 31), endMs: Date.UTC(2026, 1, 1) });
  assert.deepEqual(windowSpan(Window.HOUR, t), { startMs: Date.UTC(2026, 0, 31, 23), endMs: Date.UTC(2026, 1, 1) });
  assert.deepEqual(windowSpan(Window.MINUTE, t), { startMs: Date.UTC(2026, 0, 31, 23, 59), endMs: Date.UTC(2026, 1, 1) });
  assert.deepEqual(windowSpan(Window.SECOND, t), { startMs: Date.UTC(2026, 0, 31, 23, 59, 59), endMs: Date.UTC(2026, 1, 1) });
});

test("month rollover: the first instant of a month starts a new window", () => {
  const boundary = Date.UTC(2026, 1, 1);
  assert.notEqual(windowSpan(Window.MONTH, boundary - 1).startMs, windowSpan(Window.MONTH, boundary).startMs);
  assert.equal(windowSpan(Window.MONTH, boundary).startMs, boundary);
  // February in a leap year and December roll over correctly.
  assert.equal(windowSpan(Window.MONTH, Date.UTC(2028, 1, 29, 12)).endMs, Date.UTC(2028, 2, 1));
  assert.equal(windowSpan(Window.MONTH, Date.UTC(2026, 11, 31, 12)).endMs, Date.UTC(2027, 0, 1));
});

test("windows without a span are rejected", () => {
  assert.throws(() => windowSpan(Window.REQUEST, Date.now()), /no time span/);
});
