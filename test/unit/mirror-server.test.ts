// The mirror's sender thread dying (it should not: it never throws) is not
// the end of the mirror: it is logged and started again on the same port.
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MirrorServer } from "../../src/mirror/server";
import type { ServedRegistry } from "../../src/registry/served";
import { memoryLogger } from "./helpers";

test("a sender thread that ends is started again, on the same port", async () => {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-sender-"));
  process.env.IMAGELET_TEST_SENDER_MARKER = join(dir, "ended-once");
  const log = memoryLogger();
  const server = await MirrorServer.start({ host: "127.0.0.1", port: 0 }, {} as ServedRegistry, log, undefined, new URL("./fixtures/failing-sender.ts", import.meta.url));
  try {
    const restarted = () => log.lines.some((l) => l.level === "error" && l.msg.includes("the sender thread ended; starting it again"));
    for (let i = 0; i < 200 && !restarted(); i++) await Bun.sleep(20);
    expect(restarted()).toBe(true);
    let answer = "";
    for (let i = 0; i < 100 && answer === ""; i++) {
      answer = await fetch(`http://${server.address}/`).then((r) => r.text(), () => "");
      if (answer === "") await Bun.sleep(20);
    }
    expect({ answer, log: log.lines.map((l) => `${l.level} ${l.msg} ${JSON.stringify(l.fields)}`) }).toEqual({ answer: "sender up", log: expect.anything() });
    expect(log.lines.filter((l) => l.msg.includes("could not start again"))).toEqual([]);
  } finally {
    server.stopNow();
    rmSync(dir, { recursive: true, force: true });
  }
});
