// The CRI user rule; the cases are containerd's (image_status_test.go) plus
// the edges of strconv.ParseInt.
import { describe, expect, test } from "bun:test";
import { criUser } from "../../src/model/image";

describe("criUser", () => {
  const cases: [string | undefined, { uid?: number; username?: string }][] = [
    ["0", { uid: 0 }], ["0:1", { uid: 0 }], ["1:2:3", { uid: 1 }], ["root:root", { username: "root" }],
    ["", {}], [undefined, {}], [":1", {}], ["1000", { uid: 1000 }], ["app", { username: "app" }],
    ["-1", { uid: -1 }], ["+7", { uid: 7 }], ["12a", { username: "12a" }],
    ["99999999999999999999", { username: "99999999999999999999" }],
  ];
  for (const [user, want] of cases) test(`${JSON.stringify(user)} → ${JSON.stringify(want)}`, () => expect(criUser(user)).toEqual(want));
});
