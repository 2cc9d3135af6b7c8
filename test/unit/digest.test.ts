// The one rule for a config's rootfs.diff_ids (src/model/digest.ts), shared by
// Docker's store, containers/storage, docker-archive and the CRI's chain ID.
import { describe, expect, test } from "bun:test";
import { chainId } from "../../src/cri/convert";
import { rootfsDiffIds } from "../../src/model/digest";

const A = `sha256:${"a".repeat(64)}`;
const B = `sha256:${"b".repeat(64)}`;

describe("rootfsDiffIds", () => {
  test("a list of sha256 digests is the list", () => {
    expect(rootfsDiffIds({ rootfs: { type: "layers", diff_ids: [A, B] } })).toEqual([A, B]);
  });

  test("rootfs without diff_ids is an image without layers, as Docker writes it", () => {
    expect(rootfsDiffIds({ rootfs: { type: "layers" } })).toEqual([]);
    expect(chainId({ rootfs: { type: "layers" } })).toBeUndefined();
  });

  test.each([
    ["no rootfs", {}, "no rootfs.diff_ids list"],
    ["diff_ids not a list", { rootfs: { diff_ids: A } }, "no rootfs.diff_ids list"],
    ["a sha512 diff ID", { rootfs: { diff_ids: [`sha512:${"a".repeat(128)}`] } }, "not sha256"],
    ["upper-case hex", { rootfs: { diff_ids: [A.toUpperCase()] } }, "not sha256"],
    ["a number", { rootfs: { diff_ids: [A, 7] } }, "not sha256: 7"],
  ])("%s is refused with the reason", (_name, config, reason) => {
    const got = rootfsDiffIds(config);
    expect(typeof got).toBe("string");
    expect(got as string).toContain(reason);
    expect(chainId(config)).toBeUndefined();
  });

  test("the chain ID follows from the same list", () => {
    expect(chainId({ rootfs: { diff_ids: [A] } })).toBe(A);
    // sha256("sha256:aaa… sha256:bbb…"), image-spec config.md's ChainID
    const two = chainId({ rootfs: { diff_ids: [A, B] } })!;
    expect(two).toBe(`sha256:${new Bun.CryptoHasher("sha256").update(`${A} ${B}`).digest("hex")}`);
  });
});
