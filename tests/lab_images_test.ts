import { assertEquals, assertThrows } from "./_assert.ts";
import { parseLabArgs } from "../src/cli/lab.ts";
import { UsageError } from "../src/cli/_cli.ts";
import { DEFAULT_LAB_CONFIG } from "../src/lab/experiment.ts";
import { gangImages, type GangSpec } from "../src/lab/gang_spec.ts";

Deno.test("parseLabArgs() reads --image as one image or a list cycled across the guests", () => {
  assertEquals(parseLabArgs([]).config.images, ["busybox"]);
  assertEquals(parseLabArgs(["--image", "debian"]).config.images, ["debian"]);
  const mixed = parseLabArgs([
    "--image",
    "debian,debian-cloud, debian-rt,busybox",
    "--guests",
    "8",
  ]);
  assertEquals(mixed.config.images, ["debian", "debian-cloud", "debian-rt", "busybox"]);
  assertEquals(gangImages(mixed.config), [
    "debian",
    "debian-cloud",
    "debian-rt",
    "busybox",
    "debian",
    "debian-cloud",
    "debian-rt",
    "busybox",
  ]);
  assertEquals(
    parseLabArgs(["--image", "debian-db", "--workload", "pgbench"]).config.workload,
    "pgbench",
  );
  assertEquals(parseLabArgs(["--image", "debian-web", "--workload", "web"]).config.workload, "web");
});

Deno.test("parseLabArgs() refuses an unknown image and a workload an image cannot run", () => {
  const refuse = (args: string[], message: string) =>
    assertThrows(() => parseLabArgs(args), UsageError, message);
  refuse(["--image", "ubuntu"], "--image takes busybox, debian, debian-cloud");
  refuse(
    ["--workload", "pgbench"],
    "--workload pgbench needs images that run it (debian-db): busybox cannot",
  );
  refuse(
    ["--image", "debian-db,debian,debian", "--workload", "pgbench"],
    "debian cannot",
  );
  refuse(["--image", "debian-db", "--workload", "web"], "(debian-web): debian-db cannot");
});

Deno.test("gangImages() gives fewer guests than images the first ones", () => {
  const spec: GangSpec = {
    ...DEFAULT_LAB_CONFIG,
    guests: 2,
    images: ["debian-rt", "debian", "busybox"],
  };
  assertEquals(gangImages(spec), ["debian-rt", "debian"]);
  assertEquals(gangImages({ ...DEFAULT_LAB_CONFIG, images: undefined, guests: 1 }), ["busybox"]);
});
