// The built-in backend types. They are registered exactly as plugins will be:
// each is a BackendDefinition with the same contract.
import type { BackendDefinition } from "../backend/contract";
import ociLayout from "./oci-layout/index";

export const builtinBackends: readonly BackendDefinition[] = [ociLayout as unknown as BackendDefinition];
