// A record's mirror target passes the registry's one gate (validateRecord)
// like every other field: kept when it is a descriptor, the record refused
// naming the field when it is not.
import { describe, expect, test } from "bun:test";
import { validateRecords } from "../../src/registry/validate";
import { id, record } from "./helpers";

const target = { mediaType: "application/vnd.oci.image.index.v1+json", digest: id("a"), size: 512 };

describe("ImageRecord.target", () => {
  test("a descriptor is kept, with nothing but its three fields", () => {
    const [r] = validateRecords([record({ id: id("1"), target: { ...target, extra: "dropped" } as typeof target })]);
    expect(r!.target).toEqual(target);
  });

  test("absent stays absent", () => {
    const [r] = validateRecords([record({ id: id("1") })]);
    expect(r!.target).toBeUndefined();
  });

  const bad: [string, unknown, string][] = [
    ["not an object", "sha256:x", "target is not a descriptor"],
    ["no media type", { ...target, mediaType: "" }, "target has no mediaType"],
    ["a path for a digest", { ...target, digest: "sha256:../../etc/passwd" }, "target digest"],
    ["a negative size", { ...target, size: -1 }, "target size"],
    ["a fractional size", { ...target, size: 1.5 }, "target size"],
  ];
  for (const [what, value, message] of bad) {
    test(`${what}: the record is refused, naming the field`, () => {
      expect(() => validateRecords([record({ id: id("1"), target: value as typeof target })])).toThrow(message);
    });
  }
});
