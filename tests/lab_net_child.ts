/**
 * A lab run for tests/lab_net_test.ts to end in different ways. It makes a
 * lab network, prints `{"mode", "reason", "namespaces"}` as one line, and
 * then, by its first argument:
 *
 * - `wait`: waits to be killed (SIGKILL leaves the namespaces behind);
 * - `signal MARKER`: registers a cleanup that writes MARKER and closes the
 *   network, and waits for a signal;
 * - `throw`: dies of an uncaught error without closing;
 * - `exit`: calls Deno.exit(0) without closing.
 *
 * @module
 */
import { LabNetwork } from "../src/lab/netns.ts";
import { exitOnSignal } from "../src/lab/netns_signal.ts";

const [how, marker] = Deno.args;
const net = await LabNetwork.create({ rate: "100mbit", cleanStale: false });
const namespaces = [net.source.namespace, net.target.namespace].filter((ns) => ns !== null);
if (how === "signal") {
  exitOnSignal(async () => {
    await Deno.writeTextFile(marker!, "cleaned up");
    await net.close();
  });
}
// Reported only now: the parent may signal as soon as it reads this.
console.log(JSON.stringify({ mode: net.mode, reason: net.reason, namespaces }));

switch (how) {
  case "signal":
    await new Promise((resolve) => setTimeout(resolve, 60_000));
    break;
  case "wait":
    await new Promise((resolve) => setTimeout(resolve, 60_000));
    break;
  case "throw":
    throw new Error("a crash in the middle of a lab run");
  case "exit":
    Deno.exit(0);
}
