// The backend contract, as built-ins see it: exactly the published plugin SDK
// (sdk/imagelet-plugin.ts, printed by `imagelet sdk`), so a built-in backend
// can do nothing a plugin cannot.
export * from "../../sdk/imagelet-plugin";
export { apiVersion as BACKEND_API_VERSION } from "../../sdk/imagelet-plugin";
