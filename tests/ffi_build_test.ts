import { fileURLToPath } from "node:url";
import { assert, assertEquals } from "./_assert.ts";
import { buildLibrary, compilerFlags, LIBRARY_PATH } from "../ffi/build.ts";

async function output(program: string, args: string[]): Promise<string> {
  const result = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" })
    .output();
  assert(result.success, `${program} ${args.join(" ")} failed`);
  return new TextDecoder().decode(result.stdout);
}

Deno.test("the built library is hardened: stack protector, fortified calls, read-only relocations", async () => {
  await buildLibrary({ quiet: true });
  const path = fileURLToPath(LIBRARY_PATH);
  const dynamic = await output("readelf", ["--dynamic", "--program-headers", "--wide", path]);
  assert(/BIND_NOW/.test(dynamic), "linked with -z now");
  assert(/GNU_RELRO/.test(dynamic), "linked with -z relro");
  const imports = await output("nm", ["--dynamic", "--undefined-only", path]);
  assert(imports.includes("__stack_chk_fail"), "compiled with -fstack-protector-strong");
  assert(/__\w+_chk\b/.test(imports.replace("__stack_chk_fail", "")), "_FORTIFY_SOURCE checks");
});

Deno.test("warnings are errors in CI only, never on a user's machine", () => {
  for (const variant of ["release", "sanitized", "guest"] as const) {
    assertEquals(compilerFlags(variant, true).includes("-Werror"), true);
    assertEquals(compilerFlags(variant, false).includes("-Werror"), false);
  }
});
