import { describe, expect, test } from "bun:test";
import { formatG, humanSize, imagesTable, sortImages } from "../../src/cli/format";
import type { CriImage } from "../../src/cli/source";

describe("humanSize (go-units HumanSizeWithPrecision(size, 3))", () => {
  // Values as Go prints them: fmt.Sprintf("%.*g%s", 3, size, unit) with decimal units.
  const cases: [number, string][] = [
    [0, "0B"], [1, "1B"], [402, "402B"], [999, "999B"], [1000, "1kB"], [1132, "1.13kB"], [1500, "1.5kB"],
    [999_999, "1e+03kB"], [7_966_000, "7.97MB"], [123_456_789, "123MB"], [1_000_000_000, "1GB"], [2.5e12, "2.5TB"],
  ];
  for (const [bytes, text] of cases) test(`${bytes} → ${text}`, () => expect(humanSize(bytes)).toBe(text));
  test("formatG small exponents", () => expect(formatG(0.0001234, 3)).toBe("0.000123"));
});

const image = (id: string, repoTags: string[], repoDigests: string[] = []): CriImage =>
  ({ id, repoTags, repoDigests, size: 1132, username: "", pinned: false }) as unknown as CriImage;

describe("images table (crictl layout)", () => {
  const a = image(`sha256:${"a".repeat(64)}`, ["docker.io/library/busybox:1.36", "docker.io/library/busybox:latest"], [`docker.io/library/busybox@sha256:${"d".repeat(64)}`]);
  const b = image(`sha256:${"b".repeat(64)}`, [], [`example.com/x@sha256:${"e".repeat(64)}`]);
  const c = image(`sha256:${"c".repeat(64)}`, []);
  test("one row per tag, untagged as <none>, IDs cut to 13", () => {
    expect(imagesTable([c, b, a], { digests: false, noTrunc: false })).toBe(
      [
        "IMAGE                       TAG      IMAGE ID        SIZE",
        "<none>                      <none>   ccccccccccccc   1.13kB",
        "example.com/x               <none>   bbbbbbbbbbbbb   1.13kB",
        "docker.io/library/busybox   1.36     aaaaaaaaaaaaa   1.13kB",
        "docker.io/library/busybox   latest   aaaaaaaaaaaaa   1.13kB",
        "",
      ].join("\n"),
    );
  });
  test("--digests and --no-trunc", () => {
    const out = imagesTable([a], { digests: true, noTrunc: true });
    expect(out.split("\n")[0]).toMatch(/^IMAGE\s+TAG\s+DIGEST\s+IMAGE ID\s+SIZE$/);
    expect(out).toContain(`sha256:${"d".repeat(64)}   sha256:${"a".repeat(64)}`);
  });
  test("sorted by first tag, then first digest, then id (an absent tag sorts first)", () => {
    expect(sortImages([a, b, c]).map((i) => i.id[7])).toEqual(["c", "b", "a"]);
  });
});

import { endpointTarget } from "../../src/cli/source";
describe("endpointTarget", () => {
  test("every accepted spelling becomes unix:///path", () => {
    for (const e of ["unix:///run/x.sock", "unix:/run/x.sock", "/run/x.sock"]) expect(endpointTarget(e)).toBe("unix:///run/x.sock");
  });
  test("anything else is refused", () => {
    for (const e of ["tcp://127.0.0.1:1", "unix://relative.sock", "x.sock"]) expect(() => endpointTarget(e)).toThrow(/not a unix socket/);
  });
});
