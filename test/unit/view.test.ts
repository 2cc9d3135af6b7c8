import { describe, expect, test } from "bun:test";
import { InvalidReferenceError } from "../../src/model/reference";
import { AmbiguousReferenceError, ImageView } from "../../src/registry/view";
import { id, hex, valid } from "./helpers";

const D = `sha256:${"d".repeat(64)}`;

describe("merge", () => {
  test("the same ID from two backends is one image with the union of names, in backend order", () => {
    const view = ImageView.merge([
      { backend: "a", records: [valid({ id: id("1"), repoTags: ["busybox:1"], size: 10, user: "app" })] },
      { backend: "b", records: [valid({ id: id("1"), repoTags: ["busybox:latest", "busybox:1"], repoDigests: [`busybox@${D}`], size: 99, user: "root" })] },
    ]);
    expect(view.size).toBe(1);
    const image = view.getById(id("1"))!;
    expect(image.repoTags).toEqual(["docker.io/library/busybox:1", "docker.io/library/busybox:latest"]);
    expect(image.repoDigests).toEqual([`docker.io/library/busybox@${D}`]);
    expect(image.backends).toEqual(["a", "b"]);
    // Scalars come from the earlier backend.
    expect(image.size).toBe(10);
    expect(image.user).toBe("app");
  });

  test("a tag claimed by two images stays with the earlier backend, and the conflict is reported once", () => {
    const conflicts: string[] = [];
    const view = ImageView.merge(
      [
        { backend: "first", records: [valid({ id: id("1"), repoTags: ["app:1"] })] },
        { backend: "second", records: [valid({ id: id("2"), repoTags: ["app:1", "app:2"] })] },
      ],
      (ref, kept, keptBackend, dropped, droppedBackend) => conflicts.push(`${ref} ${kept} ${keptBackend} ${dropped} ${droppedBackend}`),
    );
    expect(view.resolve("app:1")!.id).toBe(id("1"));
    expect(view.getById(id("2"))!.repoTags).toEqual(["docker.io/library/app:2"]);
    expect(conflicts).toEqual([`docker.io/library/app:1 ${id("1")} first ${id("2")} second`]);
  });

  test("an image held as OCI anywhere is OCI; only-embedded stays embedded", () => {
    const view = ImageView.merge([
      { backend: "e", records: [valid({ id: id("1"), kind: "embedded" }), valid({ id: id("2"), kind: "embedded" })] },
      { backend: "o", records: [valid({ id: id("1"), kind: "oci", config: { os: "linux" } })] },
    ]);
    expect(view.getById(id("1"))!.kind).toBe("oci");
    expect(view.getById(id("1"))!.config).toEqual({ os: "linux" });
    expect(view.getById(id("2"))!.kind).toBe("embedded");
  });
});

describe("resolve (ImageStatus order)", () => {
  const view = ImageView.merge([
    {
      backend: "a",
      records: [
        valid({ id: id("a"), repoTags: ["busybox:latest", "quay.io/x/y:1"], repoDigests: [`busybox@${D}`] }),
        valid({ id: `sha256:abc${"0".repeat(61)}`, repoTags: [] }),
        valid({ id: `sha256:abd${"0".repeat(61)}`, repoTags: [] }),
        // An image whose ID starts like a short name another image uses.
        valid({ id: `sha256:cafe${"1".repeat(60)}`, repoTags: ["cafe:latest"] }),
        valid({ id: `sha256:cafe${"2".repeat(60)}`, repoTags: [] }),
      ],
    },
  ]);

  test("exact ID", () => expect(view.resolve(id("a"))!.id).toBe(id("a")));
  test("bare 64-hex ID", () => expect(view.resolve(hex("a"))!.id).toBe(id("a")));
  test("short name gets docker.io/library/ and :latest", () => expect(view.resolve("busybox")!.id).toBe(id("a")));
  for (const ref of ["busybox:latest", "library/busybox", "docker.io/library/busybox:latest", "index.docker.io/busybox"]) {
    test(`name ${ref}`, () => expect(view.resolve(ref)!.id).toBe(id("a")));
  }
  test("name@digest", () => expect(view.resolve(`busybox@${D}`)!.id).toBe(id("a")));
  test("name:tag@digest uses the digest, whatever the tag", () => expect(view.resolve(`busybox:nope@${D}`)!.id).toBe(id("a")));
  test("a digest under another repository is not a match", () => expect(view.resolve(`alpine@${D}`)).toBeUndefined());
  test("ID prefix with and without sha256:", () => {
    expect(view.resolve("aaaa")!.id).toBe(id("a"));
    expect(view.resolve("sha256:aaa")!.id).toBe(id("a"));
  });
  test("prefixes shorter than 3 characters are not used", () => expect(view.resolve("aa")).toBeUndefined());
  test("an ambiguous prefix is an error quoting the input", () => {
    expect(() => view.resolve("ab")).not.toThrow(); // too short to be a prefix: just not found
    expect(() => view.resolve("sha256:ab")).not.toThrow();
    expect(() => view.resolve("abc")).not.toThrow(); // unique
    expect(() => view.resolve("ca")).not.toThrow();
    expect(() => view.resolve("caf")).toThrow(AmbiguousReferenceError);
    expect(() => view.resolve("caf")).toThrow('"caf"');
  });
  test("a name wins over an ID prefix it also looks like", () => expect(view.resolve("cafe")!.id).toBe(`sha256:cafe${"1".repeat(60)}`));
  test("not found is undefined, not an error", () => {
    expect(view.resolve("nothere:1")).toBeUndefined();
    expect(view.resolve("fff")).toBeUndefined();
    expect(view.resolve(hex("f"))).toBeUndefined();
  });
  test("empty and malformed input are errors quoting the input", () => {
    for (const bad of ["", "UPPER", "a b", "../../etc/passwd", "x".repeat(300), "\u0000"]) {
      expect(() => view.resolve(bad)).toThrow(InvalidReferenceError);
    }
    expect(() => view.resolve("a b")).toThrow('"a b"');
  });
  test("asked again, every input gets the same answer (the memo changes nothing)", () => {
    const inputs = ["busybox", id("a"), "aaaa", "nothere:1", "fff", "cafe", `busybox@${D}`];
    const first = inputs.map((i) => view.resolve(i)?.id);
    for (let round = 0; round < 3; round++) expect(inputs.map((i) => view.resolve(i)?.id)).toEqual(first);
    // Errors are not remembered as "not found".
    for (let round = 0; round < 3; round++) {
      expect(() => view.resolve("caf")).toThrow(AmbiguousReferenceError);
      expect(() => view.resolve("a b")).toThrow(InvalidReferenceError);
    }
  });
  test("more distinct inputs than the memo holds: answers stay right", () => {
    for (let i = 0; i < 10_000; i++) expect(view.resolve(`nothere/n${i}:1`)).toBeUndefined();
    expect(view.resolve("busybox")!.id).toBe(id("a"));
    expect(view.resolve("quay.io/x/y:1")!.id).toBe(id("a"));
  });
});

describe("filter (ListImages)", () => {
  const view = ImageView.merge([
    {
      backend: "a",
      records: [
        valid({ id: id("1"), repoTags: ["busybox:1"] }),
        valid({ id: id("2"), repoTags: ["busybox:2"] }),
        valid({ id: id("3"), repoTags: ["alpine:3"], kind: "embedded" }),
      ],
    },
  ]);
  test("a repository without tag selects every image in it", () => expect(view.filter("busybox").map((i) => i.id)).toEqual([id("1"), id("2")]));
  test("name:tag selects one", () => expect(view.filter("busybox:2").map((i) => i.id)).toEqual([id("2")]));
  test("embedded images are returned by the filter", () => expect(view.filter("alpine:3").map((i) => i.id)).toEqual([id("3")]));
  test("an ID prefix selects every image it prefixes", () => expect(view.filter("sha256:111").map((i) => i.id)).toEqual([id("1")]));
  test("no match is an empty list", () => expect(view.filter("nginx")).toEqual([]));
  test("malformed filter is an error", () => expect(() => view.filter("Not Valid")).toThrow(InvalidReferenceError));
});
