// Entry point of the compiled binary.
import { runCli } from "./cli/main";

const code = await runCli(process.argv);
process.exitCode = code;
