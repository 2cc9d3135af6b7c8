// What imagelet takes from an OCI (or Docker) image config, for every
// backend that reads one: the raw config for verbose ImageStatus, and the
// facts CRI and the view use.
import type { Platform } from "../../backend/contract";
import { isRecord } from "../../model/json";

export interface ConfigFacts {
  /** The whole config, served as `imageSpec` by verbose ImageStatus. */
  config: Record<string, unknown>;
  /** `config.User`, raw: the CRI uid/username rule is applied on the way out. */
  user?: string;
  labels?: Record<string, string>;
  created?: string;
  platform?: Platform;
}

/** Undefined when the value is not a JSON object; fields of the wrong type are left out. */
export function configFacts(value: unknown): ConfigFacts | undefined {
  if (!isRecord(value)) return undefined;
  const inner = isRecord(value.config) ? value.config : {};
  return {
    config: value,
    user: typeof inner.User === "string" ? inner.User : undefined,
    labels: isRecord(inner.Labels)
      ? Object.fromEntries(Object.entries(inner.Labels).filter((e): e is [string, string] => typeof e[1] === "string"))
      : undefined,
    created: typeof value.created === "string" ? value.created : undefined,
    platform:
      typeof value.os === "string" && typeof value.architecture === "string"
        ? { os: value.os, architecture: value.architecture, variant: typeof value.variant === "string" ? value.variant : undefined }
        : undefined,
  };
}
