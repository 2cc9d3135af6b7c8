// Entry point of the compiled binary.
import { runCli } from "./cli/main";

const code = await runCli(process.argv);
// A command has finished once it has answered (serve never gets here, and
// the CLI writes synchronously): a backend plugin hanging on a live timer or
// socket must not keep `imagelet plugins` or `images` from exiting.
process.exit(code);
