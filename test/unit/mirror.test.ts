// The registry mirror's pure pieces: Range parsing, the route table, and
// the three client name forms (all through mirrorRepository in reference.ts).
import { describe, expect, test } from "bun:test";
import { MirrorError } from "../../src/mirror/errors";
import { contentRange, parseRange } from "../../src/mirror/range";
import { matchRoute } from "../../src/mirror/routes";
import { InvalidReferenceError, mirrorRepository } from "../../src/model/reference";

const D = `sha256:${"ab".repeat(32)}`;

describe("parseRange (one bytes= range; RFC 9110)", () => {
  test("no header, or one it does not understand, is the whole body", () => {
    expect(parseRange(null, 10)).toBe("whole");
    expect(parseRange("items=0-3", 10)).toBe("whole");
    expect(parseRange("bytes=", 10)).toBe("whole");
    expect(parseRange("bytes=5-3", 10)).toBe("whole");
  });
  test("a multi-range request gets the whole body (200), not an error", () => {
    expect(parseRange("bytes=0-1,4-5", 10)).toBe("whole");
  });
  test("first-last, open-ended, suffix; the end is clamped to the size", () => {
    expect(parseRange("bytes=0-3", 10)).toEqual({ start: 0, end: 3 });
    expect(parseRange("bytes=4-", 10)).toEqual({ start: 4, end: 9 });
    expect(parseRange("bytes=-3", 10)).toEqual({ start: 7, end: 9 });
    expect(parseRange("bytes=-30", 10)).toEqual({ start: 0, end: 9 });
    expect(parseRange("bytes=8-100", 10)).toEqual({ start: 8, end: 9 });
    expect(parseRange("BYTES = 1 - 2", 10)).toBe("whole");
    expect(parseRange("bytes=1-2", 10)).toEqual({ start: 1, end: 2 });
  });
  test("a start at or past the end, and an empty suffix, are unsatisfiable (416)", () => {
    expect(parseRange("bytes=10-", 10)).toBe("unsatisfiable");
    expect(parseRange("bytes=99-100", 10)).toBe("unsatisfiable");
    expect(parseRange("bytes=-0", 10)).toBe("unsatisfiable");
    expect(parseRange("bytes=0-", 0)).toBe("unsatisfiable");
  });
  test("Content-Range", () => expect(contentRange({ start: 2, end: 5 }, 10)).toBe("bytes 2-5/10"));
});

describe("mirrorRepository: the three client forms, one normalization", () => {
  test("containerd: the path without the registry, ?ns= names it", () => {
    expect(mirrorRepository("library/busybox", "docker.io")).toBe("docker.io/library/busybox");
    expect(mirrorRepository("busybox", "docker.io")).toBe("docker.io/library/busybox");
    expect(mirrorRepository("org/app", "quay.io")).toBe("quay.io/org/app");
    expect(mirrorRepository("app", "localhost:5000")).toBe("localhost:5000/app");
  });
  test("containerd's other names for Docker Hub are Docker Hub", () => {
    expect(mirrorRepository("library/busybox", "registry-1.docker.io")).toBe("docker.io/library/busybox");
    expect(mirrorRepository("library/busybox", "index.docker.io")).toBe("docker.io/library/busybox");
  });
  test("CRI-O and podman: the registry as the first component", () => {
    expect(mirrorRepository("quay.io/org/app")).toBe("quay.io/org/app");
    expect(mirrorRepository("docker.io/library/busybox")).toBe("docker.io/library/busybox");
    expect(mirrorRepository("127.0.0.1:5000/app")).toBe("127.0.0.1:5000/app");
  });
  test("Docker's registry-mirrors: a bare path is Docker Hub", () => {
    expect(mirrorRepository("library/busybox")).toBe("docker.io/library/busybox");
    expect(mirrorRepository("grafana/grafana")).toBe("docker.io/grafana/grafana");
  });
  test("a name with a tag, a digest, upper case, encoded or dot segments is refused", () => {
    for (const name of ["library/busybox:1", `library/busybox@${D}`, "library/BusyBox", "a/%2e%2e/b", "a/../b", "a//b", "a/./b", ""]) {
      expect(() => mirrorRepository(name)).toThrow(InvalidReferenceError);
    }
  });
  test("an ns that is not a registry host is refused, not read as a Docker Hub path", () => {
    for (const ns of ["foo", "a/b", "", "docker.io/library", "exa mple.com"]) expect(() => mirrorRepository("app", ns)).toThrow(InvalidReferenceError);
  });
});

describe("matchRoute", () => {
  const code = (path: string, ns: string | null = null) => {
    try {
      matchRoute(path, ns);
      return "matched";
    } catch (e) {
      return (e as MirrorError).code;
    }
  };
  test("the four routes", () => {
    expect(matchRoute("/v2/", null)).toEqual({ kind: "base" });
    expect(matchRoute("/v2", null)).toEqual({ kind: "base" });
    expect(matchRoute("/v2/library/busybox/manifests/1.36", "docker.io")).toEqual({
      kind: "manifest", name: "library/busybox", repository: "docker.io/library/busybox", reference: { tag: "1.36" },
    });
    expect(matchRoute(`/v2/quay.io/org/app/manifests/${D}`, null)).toMatchObject({ repository: "quay.io/org/app", reference: { digest: D } });
    expect(matchRoute(`/v2/library/busybox/blobs/${D}`, null)).toMatchObject({ kind: "blob", repository: "docker.io/library/busybox", digest: D });
    expect(matchRoute("/v2/a/b/tags/list", null)).toMatchObject({ kind: "tags", name: "a/b", repository: "docker.io/a/b" });
  });
  test("anything else is NOT_FOUND; bad parts are NAME_INVALID, TAG_INVALID, DIGEST_INVALID", () => {
    expect(code("/v2/_catalog")).toBe("NOT_FOUND");
    expect(code(`/v2/a/referrers/${D}`)).toBe("NOT_FOUND");
    expect(code("/etc/passwd")).toBe("NOT_FOUND");
    expect(code("/v2/a/blobs/uploads/")).toBe("NOT_FOUND");
    expect(code("/v2/A/manifests/1")).toBe("NAME_INVALID");
    expect(code("/v2/a%2fb/manifests/1")).toBe("NAME_INVALID");
    expect(code("/v2/a/manifests/1", "nohost")).toBe("NAME_INVALID");
    expect(code("/v2/a/manifests/-bad")).toBe("TAG_INVALID");
    expect(code("/v2/a/manifests/sha256:1234")).toBe("DIGEST_INVALID");
    expect(code("/v2/a/blobs/latest")).toBe("DIGEST_INVALID");
    expect(code(`/v2/a/blobs/sha256:${"AB".repeat(32)}`)).toBe("DIGEST_INVALID");
    expect(code(`/v2/a/blobs/md5:${"ab".repeat(16)}`)).toBe("DIGEST_INVALID");
  });
});
