// Front mode's wiring, for buildRegistry: the runtime's client, its backend
// (registered after the stores, so a tag both claim stays with the preloaded
// image), and the FrontRuntime the handlers ask, attached to the registry
// that holds that backend.
import type { Logger } from "../backend/contract";
import type { RuntimeConfig } from "../config/config";
import type { BackendRegistry, RegisteredBackend } from "../registry/registry";
import { RUNTIME_BACKEND, runtimeBackend, runtimeNotice } from "./backend";
import { RuntimeClient } from "./client";
import type { MirrorWitness } from "./mirror-witness";
import { FrontRuntime } from "./preload";

export interface FrontMode {
  /** The runtime as one more backend. */
  registered: RegisteredBackend;
  /** Gives `registry` (built with `registered`) its FrontRuntime. */
  attach(registry: BackendRegistry, witness: MirrorWitness | undefined): void;
}

export function frontMode(config: RuntimeConfig, log: Logger): FrontMode {
  const client = new RuntimeClient(config.endpoint, config.timeoutMs, log);
  const backend = runtimeBackend(client);
  return {
    registered: {
      name: RUNTIME_BACKEND,
      type: RUNTIME_BACKEND,
      backend,
      timeoutMs: config.timeoutMs,
      notice: () => runtimeNotice(client),
      key: JSON.stringify([RUNTIME_BACKEND, config.endpoint]),
      primaryFilesystem: true,
    },
    attach(registry, witness) {
      registry.front = new FrontRuntime(client, {
        log,
        mirrorWaitMs: config.mirrorWaitMs,
        witness,
        relist: () => registry.relist(RUNTIME_BACKEND),
        runtimeId: backend.runtimeId,
      });
    },
  };
}
