/**
 * How the C library is looked up: env GANGWAY_LIB, the checkout's build,
 * the cache (see src/native/library.ts). The build into the cache by URL
 * is tested in url_import_test.ts.
 *
 * @module
 */
import { assert, assertEquals } from "./_assert.ts";
import { runCommand } from "./_cli.ts";

const LIBRARY = new URL("../src/native/library.ts", import.meta.url).href;

/** Loads the library in a child Deno and prints the path it opened. */
function loadLibrary(permissions: string[], env: Record<string, string>) {
  const code = `import { nativeLibraryPath } from "${LIBRARY}"; console.log(nativeLibraryPath());`;
  return runCommand(Deno.execPath(), ["eval", ...permissions, code], { env });
}

Deno.test("a GANGWAY_LIB that cannot be loaded is an error naming it, never replaced by another build", async () => {
  const { code, stdout, stderr } = await loadLibrary(["--allow-ffi", "--allow-env=GANGWAY_LIB"], {
    GANGWAY_LIB: "/nonexistent/libgangway.so",
  });
  assert(code !== 0, stdout);
  assert(stderr.includes("named by env GANGWAY_LIB"), stderr);
  assert(stderr.includes("/nonexistent/libgangway.so (env GANGWAY_LIB): not found"), stderr);
});

Deno.test("without GANGWAY_LIB the checkout's build is found, and its path is what children get", async () => {
  // Empty counts as unset (the test runner's own GANGWAY_LIB must not leak in).
  const { code, stdout, stderr } = await loadLibrary(["--allow-ffi", "--allow-env=GANGWAY_LIB"], {
    GANGWAY_LIB: "",
  });
  assertEquals(code, 0, stderr);
  assert(stdout.trim().endsWith("/ffi/build/libgangway.so"), stdout);
});
