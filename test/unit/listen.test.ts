// [mirror] listen: HOST:PORT, and which hosts only this machine can reach.
import { describe, expect, test } from "bun:test";
import { formatListenAddress, isLoopback, parseListenAddress } from "../../src/config/listen";

describe("listen addresses", () => {
  test("HOST:PORT, IPv6 in brackets, port 0 to let the system choose", () => {
    expect(parseListenAddress("127.0.0.1:5050")).toEqual({ host: "127.0.0.1", port: 5050 });
    expect(parseListenAddress("[::1]:5050")).toEqual({ host: "::1", port: 5050 });
    expect(parseListenAddress("localhost:0")).toEqual({ host: "localhost", port: 0 });
    for (const bad of ["5050", "127.0.0.1", "127.0.0.1:", "::1:5050", "127.0.0.1:65536", "a b:1", "http://127.0.0.1:5050", ""]) {
      expect(parseListenAddress(bad)).toHaveProperty("error");
    }
  });
  test("written back as read", () => {
    for (const text of ["127.0.0.1:5050", "[::1]:5050", "0.0.0.0:80"]) expect(formatListenAddress(parseListenAddress(text) as never)).toBe(text);
  });
  test("loopback: 127.0.0.0/8, ::1, localhost; nothing else", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]) expect(isLoopback(host)).toBe(true);
    for (const host of ["0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "example.com", "128.0.0.1", "127.example.com"]) expect(isLoopback(host)).toBe(false);
  });
});
