/**
 * A TCP sink for benchmarks: accepts one connection on 127.0.0.1, reads
 * everything into a 1 MiB buffer, and prints the byte count when the peer
 * closes. Prints its port first.
 *
 * @module
 */
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log((listener.addr as Deno.NetAddr).port);
const conn = await listener.accept();
const buf = new Uint8Array(1 << 20);
let total = 0;
for (;;) {
  const n = await conn.read(buf);
  if (n === null) break;
  total += n;
}
console.log(total);
