/**
 * Which peers share the agent's bound on control connections per address:
 * the addresses one host can hold at once count as one (every loopback
 * address, an IPv4 address however it is written, an IPv6 /64).
 */
import { assertEquals, assertThrows } from "./_assert.ts";
import { addressGroup } from "../src/_address_group.ts";
import { AgentHost, MAX_CONTROL_PER_ADDRESS } from "../src/target/agent_host.ts";

Deno.test("addressGroup() counts every loopback address as one, and an IPv4-mapped address as its IPv4", () => {
  for (const address of ["127.0.0.1", "127.0.0.2", "127.255.1.9", "::1", "::ffff:127.0.0.5"]) {
    assertEquals(addressGroup(address), "loopback", address);
  }
  assertEquals(addressGroup("192.0.2.7"), "192.0.2.7");
  assertEquals(addressGroup("::ffff:192.0.2.7"), "192.0.2.7");
  assertEquals(addressGroup("::ffff:c000:207"), "192.0.2.7");
  assertEquals(addressGroup("0:0:0:0:0:ffff:192.0.2.7"), "192.0.2.7");
  assertEquals(addressGroup("192.0.2.8"), "192.0.2.8", "another IPv4 host is another group");
});

Deno.test("addressGroup() counts an IPv6 address as its /64, however it is written", () => {
  const group = "2001:db8:0:1::/64";
  for (
    const address of [
      "2001:db8:0:1::5",
      "2001:db8:0:1:a:b:c:d",
      "2001:0db8:0000:0001:ffff:ffff:ffff:ffff",
      "2001:DB8:0:1::1.2.3.4",
    ]
  ) {
    assertEquals(addressGroup(address), group, address);
  }
  assertEquals(addressGroup("2001:db8:0:2::5"), "2001:db8:0:2::/64", "another /64");
  assertEquals(addressGroup("::"), "0:0:0:0::/64");
  assertEquals(addressGroup("fe80::1%eth0"), "fe80:0:0:0::/64%eth0", "a link-local keeps its zone");
  assertEquals(addressGroup("unix"), "unix", "not an IP address: as it is");
});

/** An agent's state, with no gang and nothing on disk: enough to count connections. */
function host(): AgentHost {
  return new AgentHost({
    dir: "/nonexistent/ram",
    runDir: "/nonexistent/run",
    maxGuests: 1,
    maxMemoryMiB: 64,
    qemuBinary: "qemu-system-x86_64",
    handshakeTimeoutMs: 1_000,
    idleTimeoutMs: 1_000,
  });
}

Deno.test("the agent's bound of control connections per address counts a host's loopback and IPv6 /64 addresses as one", () => {
  const agent = host();
  const open: Disposable[] = [];
  const fill = (addresses: string[]) => {
    for (let i = 0; i < MAX_CONTROL_PER_ADDRESS; i++) {
      open.push(agent.openControl(addresses[i % addresses.length]!));
    }
  };
  const refused = "control connections open, the most one address may";

  fill(["127.0.0.1", "127.0.0.2", "::1"]);
  for (const other of ["127.0.0.3", "::1", "::ffff:127.0.0.1", "127.1.2.3"]) {
    assertThrows(() => agent.openControl(other), Error, refused);
  }
  open.push(agent.openControl("192.0.2.7")); // another host: its own share

  fill(["2001:db8::1", "2001:db8::2"]);
  assertThrows(() => agent.openControl("2001:db8::ffff"), Error, refused);
  open.push(agent.openControl("2001:db8:0:1::1")); // another /64

  fill(["192.0.2.9", "::ffff:192.0.2.9"]);
  assertThrows(() => agent.openControl("::ffff:192.0.2.9"), Error, refused);

  // Closing one frees a place for the whole group.
  open[0]![Symbol.dispose]();
  open.push(agent.openControl("127.9.9.9"));
  assertThrows(() => agent.openControl("::1"), Error, refused);
  for (const handle of open) handle[Symbol.dispose]();
});
