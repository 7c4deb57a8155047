/**
 * The C library under AddressSanitizer and UndefinedBehaviorSanitizer: a
 * separate build (`ffi/build/sanitized/`) runs the C-level checks
 * (ffi/tests/ffi_check.c, whose buffers ASan watches), then the tests of
 * the library's wrappers and the fuzzers, in a Deno that loads the
 * sanitized library with libasan preloaded. Any finding fails the test.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { assert } from "./_assert.ts";
import { buildLibrary, FFI_CHECK_PATH, SANITIZED_LIBRARY_PATH } from "../ffi/build.ts";

/** The tests that reach the C library, run again against the sanitized build. */
const NATIVE_TESTS = [
  "ram_file_test.ts",
  "content_index_test.ts",
  "scan_test.ts",
  "compression_test.ts",
  "pagemap_test.ts",
  "fuzz_test.ts",
];

/** Every finding is fatal; leaks are checked in the C driver only (Deno's own are not ours). */
const SANITIZER_ENV = {
  ASAN_OPTIONS: "abort_on_error=0:halt_on_error=1:exitcode=86:detect_leaks=1",
  UBSAN_OPTIONS: "halt_on_error=1:print_stacktrace=1",
};

/** What a sanitizer prints when it finds something. */
const FINDING = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehavior/;

async function runtimeLibrary(name: string): Promise<string> {
  const output = await new Deno.Command("gcc", { args: [`-print-file-name=${name}`] }).output();
  const path = new TextDecoder().decode(output.stdout).trim();
  if (!path.startsWith("/")) {
    throw new Error(`Cannot find ${name}: gcc does not know it (install libasan8 and libubsan1)`);
  }
  return path;
}

async function run(
  program: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ success: boolean; text: string }> {
  const output = await new Deno.Command(program, {
    args,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    success: output.success,
    text: decoder.decode(output.stdout) + decoder.decode(output.stderr),
  };
}

/** The end of a long output: where a failure or a sanitizer report is. */
function tail(text: string): string {
  return text.split("\n").slice(-60).join("\n");
}

Deno.test("the C library's entry points pass the C-level checks under ASan and UBSan", async () => {
  await buildLibrary({ variant: "sanitized", quiet: true });
  const { success, text } = await run(fileURLToPath(FFI_CHECK_PATH), [], SANITIZER_ENV);
  assert(success && !FINDING.test(text), tail(text));
  assert(text.includes("ok hashes and dirs"), `the checks stopped early:\n${tail(text)}`);
});

Deno.test("the native-library tests and the fuzzers pass against the library built with ASan and UBSan", async () => {
  await buildLibrary({ variant: "sanitized", quiet: true });
  const preload = [await runtimeLibrary("libasan.so"), await runtimeLibrary("libubsan.so")];
  const tests = NATIVE_TESTS.map((name) => new URL(name, import.meta.url).href);
  const { success, text } = await run(Deno.execPath(), ["test", "-A", ...tests], {
    ...SANITIZER_ENV,
    // Deno's own allocations and V8's are no concern of these tests.
    ASAN_OPTIONS: SANITIZER_ENV.ASAN_OPTIONS.replace("detect_leaks=1", "detect_leaks=0"),
    LD_PRELOAD: preload.join(":"),
    GANGWAY_LIB: fileURLToPath(SANITIZED_LIBRARY_PATH),
  });
  assert(success && !FINDING.test(text), tail(text));
  assert(/ok \| \d+ passed \| 0 failed/.test(text), tail(text));
});
