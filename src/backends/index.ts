// The built-in backend types. They are registered exactly as plugins will be:
// each is a BackendDefinition with the same contract.
import type { BackendDefinition } from "../backend/contract";
import archives from "./archives/index";
import containersStorage from "./containers-storage/index";
import docker from "./docker/index";
import exec from "./exec/index";
import isulad from "./isulad/index";
import ociLayout from "./oci-layout/index";

export const builtinBackends: readonly BackendDefinition[] = [ociLayout, archives, containersStorage, docker, isulad, exec] as unknown as BackendDefinition[];
