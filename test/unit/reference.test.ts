// Cases from github.com/distribution/reference normalize_test.go and
// reference_test.go, plus containerd's ParseDockerRef defaults.
import { describe, expect, test } from "bun:test";
import { InvalidReferenceError, MAX_REFERENCE_LENGTH, normalizeReference, parseDockerRef, parseNormalizedNamed, isFullReference, quote, taggedReference, withDefaultTag } from "../../src/model/reference";

const HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";
const F64 = "f".repeat(64);

describe("ParseNormalizedNamed (TestValidateReferenceName)", () => {
  const valid = [
    "docker/docker", "library/debian", "debian", "docker.io/docker/docker", "docker.io/library/debian",
    "docker.io/debian", "index.docker.io/docker/docker", "index.docker.io/library/debian", "index.docker.io/debian",
    "127.0.0.1:5000/docker/docker", "127.0.0.1:5000/library/debian", "127.0.0.1:5000/debian", "192.168.0.1",
    "192.168.0.1:80", "192.168.0.1:8/debian", "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker", "[fc00:1:2:3:4:5:6:7]:5000/library/debian", `docker.io/${HEX64}`,
    "Docker/docker", "DOCKER/docker", "docker-rules/docker", "docker---rules/docker", "doc/docker", "d/docker",
    "jess/t", "dock__er/docker",
  ];
  const invalid = [
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker", "-docker.io/docker/docker",
    "docker///docker", "docker.io/docker/Docker", "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000",
    "fc00::1:5000/debian", "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian", HEX64,
    "docker-/docker", "-docker-/docker", "____/____", "_docker/_docker", "dock..er/docker", "dock_.er/docker",
    "dock-.er/docker", "docker/", `${"this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_".repeat(4)}/docker`,
    "", ":justtag", `@sha256:${F64}`, "repo@sha256:ffffffffffffffffffffffffffffffffff",
    `validname@invaliddigest:${F64}`, "Uppercase:tag", "test:5000/Uppercase/lowercase:tag",
    `${"a/".repeat(128)}a:tag`, "aa/asdf$$^/aa", "[2001:db8::1]", "[2001:db8::1]:5000", "[2001:db8::1]:tag",
    "[fe80::1%@invalidzone]:5000/repo",
  ];
  for (const name of valid) test(`valid ${name}`, () => expect(() => parseNormalizedNamed(name)).not.toThrow());
  for (const name of invalid) test(`invalid ${name.slice(0, 60)}`, () => expect(() => parseNormalizedNamed(name)).toThrow(InvalidReferenceError));
});

describe("normalization (TestParseRepositoryInfo, TestNormalizedSplitHostname)", () => {
  const cases: [string, string][] = [
    ["fooo/bar", "docker.io/fooo/bar"], ["index.docker.io/fooo/bar", "docker.io/fooo/bar"],
    ["ubuntu", "docker.io/library/ubuntu"], ["library/ubuntu", "docker.io/library/ubuntu"],
    ["nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu"], ["other/library", "docker.io/other/library"],
    ["127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase"], ["127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase"],
    ["example.com:8000/privatebasee", "example.com:8000/privatebasee"], ["ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base"],
    ["index.docker.io/library/ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base"], ["docker.io/foo", "docker.io/library/foo"],
    ["library/foo/bar", "docker.io/library/foo/bar"], ["store/foo/bar", "docker.io/store/foo/bar"], ["Foo/bar", "Foo/bar"],
    ["test.com/foo", "test.com/foo"], ["test_com/foo", "docker.io/test_com/foo"], ["test-com:8080/foo", "test-com:8080/foo"],
    ["xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo"], ["localhost/foo", "localhost/foo"], ["localhost:5000/foo", "localhost:5000/foo"],
  ];
  for (const [input, repository] of cases) test(`${input} → ${repository}`, () => expect(parseNormalizedNamed(input).repository).toBe(repository));

  test("tag and digest are both kept by ParseNormalizedNamed", () => {
    const ref = parseNormalizedNamed("busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa");
    expect(ref).toEqual({ repository: "docker.io/library/busybox", tag: "latest", digest: "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa" });
  });
  test("sha512 digests are accepted", () => {
    expect(parseNormalizedNamed(`xn--7o8h.com/myimage:xn--7o8h.com@sha512:${"f".repeat(128)}`).digest).toBe(`sha512:${"f".repeat(128)}`);
  });
  test("a repository name over 255 characters is refused; exactly 255 is not, whatever the tag", () => {
    expect(() => parseNormalizedNamed(`${"a/".repeat(128)}a:tag`)).toThrow(/255/);
    // Normalization adds docker.io/, which counts: Go's Parse-only case "a/"×127 is over the limit here.
    expect(() => parseNormalizedNamed(`${"a/".repeat(127)}a:tag`)).toThrow(/255/);
    const name = `example.com/${"a/".repeat(121)}a`;
    expect(name.length).toBe(255);
    expect(parseNormalizedNamed(`${name}:tag-puts-this-over-max`).tag).toBe("tag-puts-this-over-max");
  });
});

describe("parseDockerRef (containerd defaults)", () => {
  test("adds :latest to a bare name", () => expect(normalizeReference("busybox")).toBe("docker.io/library/busybox:latest"));
  test("keeps an explicit tag", () => expect(normalizeReference("busybox:1.36")).toBe("docker.io/library/busybox:1.36"));
  test("tags may be uppercase", () => expect(normalizeReference("lowercase:Uppercase")).toBe("docker.io/library/lowercase:Uppercase"));
  test("drops the tag when a digest is present", () => {
    expect(parseDockerRef(`busybox:1.36@sha256:${F64}`)).toEqual({ repository: "docker.io/library/busybox", digest: `sha256:${F64}` });
  });
  test("a digest reference gets no :latest", () => expect(normalizeReference(`quay.io/a/b@sha256:${F64}`)).toBe(`quay.io/a/b@sha256:${F64}`));
});

describe("the default-tag rule, once (withDefaultTag, taggedReference)", () => {
  const parse = parseNormalizedNamed;
  test("no tag and no digest is latest; a digest drops the tag", () => {
    expect(withDefaultTag(parse("busybox"))).toEqual({ repository: "docker.io/library/busybox", tag: "latest" });
    expect(withDefaultTag(parse(`quay.io/a/b:1@sha256:${F64}`))).toEqual({ repository: "quay.io/a/b", digest: `sha256:${F64}` });
  });
  test("taggedReference keeps the tag, or says latest", () => {
    expect(taggedReference(parse("busybox"))).toBe("docker.io/library/busybox:latest");
    expect(taggedReference(parse("busybox:1.36"))).toBe("docker.io/library/busybox:1.36");
  });
});

describe("isFullReference (ref.name reading)", () => {
  test("bare tags are not full references", () => {
    for (const v of ["1.0", "latest", "v9"]) expect(isFullReference(v)).toBe(false);
  });
  test("names with / : or @ that parse are", () => {
    for (const v of ["example.com/edge/hello:1.0", "edge-tools:2.0", `a@sha256:${F64}`]) expect(isFullReference(v)).toBe(true);
  });
  test("names that do not parse are not", () => expect(isFullReference("Bad/Name:x")).toBe(false));
});

describe("length", () => {
  test("the longest valid reference (name 255, tag 128, sha512 digest) parses", () => {
    const name = `example.com/${"a".repeat(255 - "example.com/".length)}`;
    const ref = `${name}:${"t".repeat(128)}@sha512:${"f".repeat(128)}`;
    expect(ref.length).toBeLessThan(MAX_REFERENCE_LENGTH);
    expect(parseNormalizedNamed(ref)).toEqual({ repository: name, tag: "t".repeat(128), digest: `sha512:${"f".repeat(128)}` });
  });
  test("longer input is refused before the grammar runs (regression: megabytes of a/a/… took seconds)", () => {
    for (const input of ["a/".repeat(2_000_000), "a".repeat(MAX_REFERENCE_LENGTH + 1), `busybox:${"1".repeat(2000)}`]) {
      expect(() => parseNormalizedNamed(input)).toThrow(InvalidReferenceError);
      expect(() => parseNormalizedNamed(input)).toThrow(`longer than ${MAX_REFERENCE_LENGTH} characters`);
    }
  });
});

describe("quote", () => {
  test("escapes control characters and cuts long input", () => {
    expect(quote("a\nb\u0000")).toBe('"a\\nb\\u0000"');
    expect(quote("x".repeat(500))).toContain("…(500 chars)");
  });
});
