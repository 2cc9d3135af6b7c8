// Completions that trigger the next one synchronously (Bun's HTTP/2 flush
// completing answer after answer inside one another) stay shallow.
import { expect, test } from "bun:test";
import { bounded, MAX_NESTED, nestedCompletions } from "../../src/server/completion-depth";

test("a chain of 100,000 completions, each starting the next, neither overflows the stack nor nests past the bound", async () => {
  let deepest = 0;
  let ran = 0;
  const done = Promise.withResolvers<void>();
  const step = (left: number) =>
    bounded(() => {
      ran++;
      deepest = Math.max(deepest, nestedCompletions());
      if (left === 0) done.resolve();
      else step(left - 1)();
    });
  step(100_000)();
  await done.promise;
  expect(ran).toBe(100_001);
  expect(deepest).toBe(MAX_NESTED);
  expect(nestedCompletions()).toBe(0);
});

test("a completion's error reaches its callback, at once when not nested", () => {
  const seen: unknown[] = [];
  const error = new Error("write failed");
  bounded((e) => seen.push(e))(error);
  expect(seen).toEqual([error]);
});
